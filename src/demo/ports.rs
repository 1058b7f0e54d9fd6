//! Where the demo's parts listen: the README's fixed ports, or ephemeral ones (tests, load
//! runs, several demos side by side), and which TLS parts it has.

use std::net::SocketAddr;

/// Where each part listens; the demo uses the fixed ports of the README, tests use port 0.
#[derive(Debug, Clone)]
pub struct DemoPorts {
    pub switch: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub emoney: SocketAddr,
    pub gift: SocketAddr,
    pub mileage: SocketAddr,
    pub acquirer: SocketAddr,
    pub admin: SocketAddr,
}

impl Default for DemoPorts {
    fn default() -> Self {
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        DemoPorts {
            switch: at(8583),
            metrics: Some(at(9583)),
            emoney: at(9101),
            gift: at(9102),
            mileage: at(9103),
            acquirer: at(9201),
            admin: at(8580),
        }
    }
}

impl DemoPorts {
    /// F17's bank listener: 8585 beside the fixed admin port (8580) of the README's demo, any
    /// port otherwise (tests, several demos side by side).
    pub fn bank(&self) -> SocketAddr {
        self.beside_admin(8585)
    }

    /// The demo's partner callback receiver: 8590 beside the fixed admin port, any port
    /// otherwise.
    pub fn partner(&self) -> SocketAddr {
        self.beside_admin(8590)
    }

    /// The fixed port only beside the README's fixed admin port: tests that pick ports of
    /// their own (any other admin port) get ports the system picks, never a fixed one that
    /// another test or a running demo may hold.
    fn beside_admin(&self, port: u16) -> SocketAddr {
        let fixed = self.admin.port() == DemoPorts::default().admin.port();
        SocketAddr::new(self.admin.ip(), if fixed { port } else { 0 })
    }

    /// Every part on an ephemeral port (tests, `load --demo`): nothing else in the way.
    pub fn ephemeral() -> DemoPorts {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        DemoPorts {
            switch: any,
            metrics: None,
            emoney: any,
            gift: any,
            mileage: any,
            acquirer: any,
            admin: any,
        }
    }

    /// As [`DemoPorts::ephemeral`], with metrics served too (`cyberswitch demo
    /// --ephemeral-ports`: a process has one metrics recorder, and this one is the demo's).
    pub fn ephemeral_with_metrics() -> DemoPorts {
        DemoPorts {
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..DemoPorts::ephemeral()
        }
    }
}

/// The demo's TLS parts (SPEC §10), certificates from its own CA in `<data-dir>/tls/`: a TLS
/// terminal listener beside the plain one, and the admin API over HTTPS. `cyberswitch demo`
/// has both ([`DemoTls::fixed`]); the tests and `--ephemeral-ports` (the crash harness) run
/// plain unless they ask ([`DemoTls::ephemeral`]).
#[derive(Debug, Clone, Default)]
pub struct DemoTls {
    pub switch: Option<SocketAddr>,
    pub admin: bool,
}

impl DemoTls {
    /// 127.0.0.1:8584 and HTTPS on the admin port (8580).
    pub fn fixed() -> DemoTls {
        DemoTls {
            switch: Some(SocketAddr::from(([127, 0, 0, 1], 8584))),
            admin: true,
        }
    }

    /// Both, the TLS listener on an ephemeral port.
    pub fn ephemeral() -> DemoTls {
        DemoTls {
            switch: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            admin: true,
        }
    }

    pub(super) fn any(&self) -> bool {
        self.switch.is_some() || self.admin
    }
}

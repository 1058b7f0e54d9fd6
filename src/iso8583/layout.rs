//! The compiled form of a message layout, [`Spec`]: a flat table indexed by field number whose
//! entries are small `Copy` values, so the decoder's per-field work is one table read and a
//! `match`. Reading and validating a spec file into one is `spec.rs`'s job.

use std::collections::BTreeMap;

use super::field::{Bitmap, BitmapEncoding, FieldCodec, FieldDef, MtiEncoding, MAX_FIELD};
use super::plan::Plan;

/// A compiled message layout.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub description: String,
    pub mti: MtiEncoding,
    pub bitmap: BitmapEncoding,
    /// Bit 65 announces a third bitmap (fields 129–192) instead of being a data field.
    pub tertiary: bool,
    /// Indexed by field number; `None` for undefined fields (and 0, 1).
    pub(crate) codecs: Vec<Option<FieldCodec>>,
    /// The same table in its hot-path form (see [`Plan`]).
    pub(crate) plans: Vec<Plan>,
    /// The data fields the layout defines.
    pub(crate) defined: Bitmap,
    fields: BTreeMap<u16, FieldDef>,
}

/// What a spec file says about the layout as a whole, once validated.
pub(crate) struct Header {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) mti: MtiEncoding,
    pub(crate) bitmap: BitmapEncoding,
    pub(crate) tertiary: bool,
}

impl Spec {
    /// Build the lookup tables the codec runs on from validated field definitions, whose
    /// numbers the loader has already checked to lie in 2..=[`MAX_FIELD`].
    pub(crate) fn compiled(header: Header, fields: BTreeMap<u16, FieldDef>) -> Spec {
        let mut codecs = vec![None; usize::from(MAX_FIELD) + 1];
        let mut defined = Bitmap::default();
        for (&n, def) in &fields {
            codecs[usize::from(n)] = Some(def.codec);
            defined.set(n);
        }
        let plans = codecs.iter().map(|c| Plan::of(c.as_ref())).collect();
        Spec {
            name: header.name,
            description: header.description,
            mti: header.mti,
            bitmap: header.bitmap,
            tertiary: header.tertiary,
            codecs,
            plans,
            defined,
            fields,
        }
    }

    /// The definition of field `n`, if the layout has one.
    pub fn field(&self, n: u16) -> Option<&FieldDef> {
        self.fields.get(&n)
    }

    /// All defined fields, in number order.
    pub fn fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.fields.values()
    }

    #[inline]
    pub(crate) fn plan(&self, n: u16) -> Plan {
        self.plans.get(usize::from(n)).copied().unwrap_or_default()
    }

    #[inline]
    pub(crate) fn codec(&self, n: u16) -> Option<&FieldCodec> {
        self.codecs.get(usize::from(n)).and_then(Option::as_ref)
    }

    /// Highest field number a message of this layout can carry.
    pub fn max_field(&self) -> u16 {
        if self.tertiary {
            MAX_FIELD
        } else {
            128
        }
    }
}

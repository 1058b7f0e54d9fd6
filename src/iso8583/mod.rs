//! ISO 8583 codec: layouts as data ([`Spec`], loaded from `specs/*.toml`), decoding into a
//! borrowed [`Message`], encoding from an [`OwnedMessage`], typed access to the fields the switch
//! uses, and the [`Pan`] type that cannot print itself in clear.

mod decode;
mod ebcdic_tables;
mod encode;
pub mod error;
pub mod json;
mod message;
pub mod pan;
mod plan;
pub mod response;
pub mod spec;
pub mod tlv;
mod typed;
mod wire;

pub use encode::Checked;
pub use error::{DecodeError, EncodeError, Place, Reason};
pub use message::{Bitmap, Field, Message, Mti, OwnedMessage};
pub use pan::Pan;
pub use response::{answer, ResponseCode};
pub use spec::{FieldDef, Spec, SpecError};
pub use typed::{de, AdditionalAmount, OriginalData};

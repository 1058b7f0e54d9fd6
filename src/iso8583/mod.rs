//! ISO 8583 codec: layouts as data ([`Spec`], loaded from `specs/*.toml`), decoding into a
//! borrowed [`Message`], encoding from an [`OwnedMessage`], typed access to the fields the switch
//! uses, and the [`Pan`] type that cannot print itself in clear.
//!
//! The codec files are layered, each importing only from the ones before it: `field` (the
//! vocabulary: formats, encodings, prefixes, padding, [`FieldCodec`](spec::FieldCodec),
//! [`Bitmap`]) depends on nothing; `wire` (byte-level codecs of one field) on `field`;
//! `plan` (the hot-path form of a field) on `field`; `layout` (the compiled [`Spec`]) on
//! `field` and `plan`; `message` on `field`, `layout` and `wire`; `spec` (reading and validating
//! a spec file) on `field` and `layout`; `error` on `field`; and `decode`, `encode`, `json` on
//! the layers below them. `tlv`, `typed` and `pan` sit beside the codec, on `field`, `wire` and
//! `message`. `response` (response codes, building an answer) sits on `message`.

mod decode;
mod ebcdic_tables;
mod encode;
pub mod error;
mod field;
pub mod json;
mod layout;
mod message;
pub mod pan;
mod plan;
pub mod response;
pub mod spec;
pub mod tags;
pub mod tlv;
mod typed;
mod wire;
pub use wire::padded_digits;

pub use encode::Checked;
pub use error::{DecodeError, EncodeError, Place, Reason};
pub use field::{Bitmap, FieldDef};
pub use layout::Spec;
pub use message::{Field, Message, Mti, OwnedMessage};
pub use pan::Pan;
pub use response::{answer, ResponseCode};
pub use spec::SpecError;
pub use typed::{de, AdditionalAmount, OriginalData};

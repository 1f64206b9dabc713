//! The bus codec: MessagePack with field names (`to_vec_named`), because the compact
//! form does not round-trip k8s-openapi types.

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

pub fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(v)?)
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(b)?)
}

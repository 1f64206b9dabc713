//! W3C Trace Context's `traceparent` (version 00): the one value that makes a trace
//! follow a request from the gateway through every actor it wakes, carried in HTTP and
//! NATS headers under the same name.

use std::fmt;

/// The header's name, in HTTP requests and in NATS message headers alike.
pub const HEADER: &str = "traceparent";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The span that sent it: the parent of whatever the receiver does.
    pub parent_id: [u8; 8],
    pub flags: u8,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceParentError {
    #[error("traceparent is not version-traceid-parentid-flags")]
    Shape,
    #[error("traceparent has a non-hex or wrongly sized field")]
    Hex,
    #[error("traceparent version ff or an all-zero id is invalid")]
    Invalid,
}

fn hex_into(s: &str, out: &mut [u8]) -> Result<(), TraceParentError> {
    if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Err(TraceParentError::Hex);
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| TraceParentError::Hex)?;
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TraceParent {
    /// Parses a header value as the spec's receivers must: lowercase hex, version 00 read
    /// strictly, later versions by their first four fields.
    pub fn parse(s: &str) -> Result<TraceParent, TraceParentError> {
        let s = s.trim();
        let parts: Vec<&str> = s.split('-').collect();
        if parts.len() < 4 || (parts[0] == "00" && parts.len() != 4) {
            return Err(TraceParentError::Shape);
        }
        let mut version = [0u8; 1];
        hex_into(parts[0], &mut version)?;
        let mut tp = TraceParent { trace_id: [0; 16], parent_id: [0; 8], flags: 0 };
        hex_into(parts[1], &mut tp.trace_id)?;
        hex_into(parts[2], &mut tp.parent_id)?;
        let mut flags = [0u8; 1];
        hex_into(parts[3], &mut flags)?;
        tp.flags = flags[0];
        if version[0] == 0xff || tp.trace_id == [0; 16] || tp.parent_id == [0; 8] {
            return Err(TraceParentError::Invalid);
        }
        Ok(tp)
    }

    /// The same trace, sent on by the span `span_id`.
    pub fn child(&self, span_id: [u8; 8]) -> TraceParent {
        TraceParent { parent_id: span_id, ..*self }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn parent_id_hex(&self) -> String {
        hex(&self.parent_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id_hex(), self.parent_id_hex(), self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trips_the_specs_example() {
        let tp = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_string(), SAMPLE);
        assert_eq!(tp.child([1; 8]).to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-0101010101010101-01");
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        assert_eq!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"), Err(TraceParentError::Shape));
        assert_eq!(TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), Err(TraceParentError::Hex));
        assert_eq!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), Err(TraceParentError::Invalid));
        assert_eq!(TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), Err(TraceParentError::Invalid));
        assert_eq!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"), Err(TraceParentError::Shape));
        // A later version may add fields; its first four still count.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_ok());
    }
}

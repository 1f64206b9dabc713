//! The v2 document in gnostic's protobuf form (`openapi.v2.Document`), which client-go asks
//! for first (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`) and
//! `kubectl explain --output=plaintext-openapiv2` needs. Only the messages and fields our
//! JSON document uses are written; field numbers are gnostic's OpenAPIv2.proto.

use serde_json::{Map, Value};

/// What clients put in Accept (client-go sends the `@v1.0` spelling).
pub const ACCEPT_MARK: &str = "application/com.github.proto-openapi.spec.v2";
/// What the answer is labelled: the `@` spelling is not a valid media type for Go's
/// mime parser, so kube-apiserver answers with the dotted one.
pub const CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (strings, bytes, nested messages).
fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    varint(out, ((field as u64) << 3) | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes(out, field, s.as_bytes());
    }
}

fn boolean(out: &mut Vec<u8>, field: u32, b: bool) {
    if b {
        varint(out, (field as u64) << 3);
        varint(out, 1);
    }
}

fn message(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    f(&mut inner);
    bytes(out, field, &inner);
}

/// `NamedAny{name, Any{yaml}}`: a vendor extension, its value as YAML (JSON is YAML).
fn extension(out: &mut Vec<u8>, field: u32, name: &str, v: &Value) {
    message(out, field, |m| {
        string(m, 1, name);
        message(m, 2, |a| string(a, 2, &v.to_string()));
    });
}

fn extensions(out: &mut Vec<u8>, field: u32, o: &Map<String, Value>) {
    for (k, v) in o.iter().filter(|(k, _)| k.starts_with("x-")) {
        extension(out, field, k, v);
    }
}

fn schema(out: &mut Vec<u8>, s: &Value) {
    let Some(o) = s.as_object() else { return };
    let text = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
    string(out, 1, text("$ref"));
    string(out, 2, text("format"));
    string(out, 4, text("description"));
    for r in o.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        string(out, 19, r);
    }
    match o.get("additionalProperties") {
        Some(Value::Bool(b)) => message(out, 21, |m| {
            varint(m, 2 << 3);
            varint(m, *b as u64);
        }),
        Some(ap @ Value::Object(_)) => message(out, 21, |m| message(m, 1, |x| schema(x, ap))),
        _ => {}
    }
    if let Some(t) = o.get("type").and_then(Value::as_str) {
        message(out, 22, |m| string(m, 1, t));
    }
    if let Some(items) = o.get("items") {
        message(out, 23, |m| message(m, 1, |x| schema(x, items)));
    }
    for a in o.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        message(out, 24, |x| schema(x, a));
    }
    if let Some(props) = o.get("properties").and_then(Value::as_object) {
        message(out, 25, |m| {
            for (name, p) in props {
                message(m, 1, |n| {
                    string(n, 1, name);
                    message(n, 2, |x| schema(x, p));
                });
            }
        });
    }
    extensions(out, 31, o);
}

/// `ParametersItem{Parameter{NonBodyParameter{QueryParameterSubSchema}}}`.
fn query_parameter(out: &mut Vec<u8>, p: &Value) {
    message(out, 8, |item| {
        message(item, 1, |param| {
            message(param, 2, |nb| {
                message(nb, 3, |q| {
                    string(q, 2, p["in"].as_str().unwrap_or("query"));
                    string(q, 4, p["name"].as_str().unwrap_or(""));
                    string(q, 6, p["type"].as_str().unwrap_or("string"));
                    boolean(q, 20, p["uniqueItems"].as_bool().unwrap_or(false));
                });
            });
        });
    });
}

fn operation(out: &mut Vec<u8>, op: &Value) {
    string(out, 5, op["operationId"].as_str().unwrap_or(""));
    for p in op["parameters"].as_array().into_iter().flatten() {
        query_parameter(out, p);
    }
    if let Some(responses) = op["responses"].as_object() {
        message(out, 9, |rs| {
            for (code, r) in responses {
                message(rs, 1, |named| {
                    string(named, 1, code);
                    message(named, 2, |rv| {
                        message(rv, 1, |resp| {
                            string(resp, 1, r["description"].as_str().unwrap_or(""));
                            if let Some(s) = r.get("schema") {
                                message(resp, 2, |si| message(si, 1, |x| schema(x, s)));
                            }
                        });
                    });
                });
            }
        });
    }
    if let Some(o) = op.as_object() {
        extensions(out, 13, o);
    }
}

/// Encodes the JSON v2 document (as [`super::v2_document`] builds it) as a gnostic Document.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string(&mut out, 1, doc["swagger"].as_str().unwrap_or("2.0"));
    message(&mut out, 2, |i| {
        string(i, 1, doc["info"]["title"].as_str().unwrap_or(""));
        string(i, 2, doc["info"]["version"].as_str().unwrap_or(""));
    });
    if let Some(paths) = doc["paths"].as_object() {
        message(&mut out, 8, |ps| {
            for (path, item) in paths {
                message(ps, 2, |named| {
                    string(named, 1, path);
                    message(named, 2, |pi| {
                        for (verb, field) in [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("patch", 8)] {
                            if let Some(op) = item.get(verb) {
                                message(pi, field, |o| operation(o, op));
                            }
                        }
                    });
                });
            }
        });
    }
    if let Some(defs) = doc["definitions"].as_object() {
        message(&mut out, 9, |ds| {
            for (name, s) in defs {
                message(ds, 1, |named| {
                    string(named, 1, name);
                    message(named, 2, |x| schema(x, s));
                });
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_format_of_a_small_document() {
        let doc = json!({"swagger": "2.0", "info": {"title": "T", "version": "v"},
                         "definitions": {"a.B": {"type": "object", "properties": {"c": {"type": "string"}}, "x-k": true}}});
        let b = encode(&doc);
        // swagger (field 1, "2.0"), then info (field 2) holding title "T" and version "v".
        assert_eq!(&b[..11], &[0x0a, 3, b'2', b'.', b'0', 0x12, 6, 0x0a, 1, b'T', 0x12, 1][..11]);
        // definitions (field 9) → NamedSchema "a.B" → Schema with type (22) "object".
        let pos = b.iter().position(|&x| x == 0x4a).expect("definitions field");
        assert!(b[pos..].windows(3).any(|w| w == b"a.B"));
        assert!(b.windows(6).any(|w| w == b"object"));
        assert!(b.windows(3).any(|w| w == b"x-k") && b.windows(4).any(|w| w == b"true"));
    }

    #[test]
    fn varints_are_little_endian_base_128() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
    }
}

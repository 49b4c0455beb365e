//! A JSON object written field by field, for the two lines every request writes (the
//! request log line and the journal line). Their keys are fixed ASCII names, so only the
//! values go through escaping; serializing a derived struct escapes every key as well,
//! which was most of the cost of those lines.

use serde::Serialize;

pub(super) struct JsonObject {
    out: Vec<u8>,
    empty: bool,
}

impl JsonObject {
    pub(super) fn with_capacity(capacity: usize) -> JsonObject {
        let mut out = Vec::with_capacity(capacity);
        out.push(b'{');
        JsonObject { out, empty: true }
    }

    fn key(&mut self, key: &'static str) {
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{key}");
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string, number, boolean or option of one (`null` when `None`).
    pub(super) fn field(&mut self, key: &'static str, value: impl Serialize) {
        self.key(key);
        // Writing a plain value into a Vec cannot fail.
        let written = serde_json::to_writer(&mut self.out, &value);
        debug_assert!(written.is_ok(), "{key} could not be written");
    }

    /// The field only when there is a value (as `skip_serializing_if = "Option::is_none"`).
    pub(super) fn field_if_some(&mut self, key: &'static str, value: Option<impl Serialize>) {
        if let Some(value) = value {
            self.field(key, value);
        }
    }

    /// The object, closed.
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.out.push(b'}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_options_are_null_or_left_out() {
        let mut object = JsonObject::with_capacity(8);
        object.field("text", "a \"quoted\"\nline\u{1}");
        object.field("none", None::<&str>);
        object.field("number", 18_446_744_073_709_551_615u64);
        object.field("negative", -5i64);
        object.field("yes", true);
        object.field_if_some("skipped", None::<u64>);
        object.field_if_some("kept", Some(3u64));
        let text = String::from_utf8(object.finish()).unwrap();
        assert_eq!(
            text,
            r#"{"text":"a \"quoted\"\nline\u0001","none":null,"number":18446744073709551615,"negative":-5,"yes":true,"kept":3}"#
        );
        assert_eq!(String::from_utf8(JsonObject::with_capacity(0).finish()).unwrap(), "{}");
    }
}

//! The methods each documented path answers, read from the OpenAPI document once, for the
//! `Allow` header a `405` must carry (RFC 9110 §15.5.6).

use serde_json::Value;

/// Path templates (`/vault/conversations/{id}`) and the methods they answer.
pub struct AllowedMethods {
    paths: Vec<(Vec<Segment>, String)>,
}

enum Segment {
    Literal(String),
    Parameter,
}

impl AllowedMethods {
    /// From an OpenAPI document's `paths`.
    pub fn from_spec(spec: &Value) -> AllowedMethods {
        let paths = spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(template, operations)| {
                        let segments = split(template)
                            .map(|s| match s.starts_with('{') && s.ends_with('}') {
                                true => Segment::Parameter,
                                false => Segment::Literal(s.to_string()),
                            })
                            .collect();
                        let methods: Vec<String> = operations
                            .as_object()
                            .map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect())
                            .unwrap_or_default();
                        (segments, methods.join(", "))
                    })
                    .collect()
            })
            .unwrap_or_default();
        AllowedMethods { paths }
    }

    /// The methods `path` answers, as an `Allow` value; a literal segment wins over a
    /// parameter where two templates match.
    pub fn for_path(&self, path: &str) -> Option<&str> {
        let wanted: Vec<&str> = split(path).collect();
        self.paths
            .iter()
            .filter(|(template, _)| {
                template.len() == wanted.len()
                    && template.iter().zip(&wanted).all(|(segment, part)| match segment {
                        Segment::Literal(literal) => literal == part,
                        Segment::Parameter => !part.is_empty(),
                    })
            })
            .max_by_key(|(template, _)| template.iter().filter(|s| matches!(s, Segment::Literal(_))).count())
            .map(|(_, methods)| methods.as_str())
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.trim_start_matches('/').split('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_matched_segment_by_segment_and_literals_win() {
        let spec = serde_json::json!({"paths": {
            "/vault/conversations/{id}": {"get": {}, "put": {}, "delete": {}},
            "/vault/conversations/{id}/messages": {"post": {}},
            "/vault/training/jobs/{id}": {"get": {}},
            "/vault/training/jobs/active": {"post": {}},
        }});
        let allowed = AllowedMethods::from_spec(&spec);
        assert_eq!(allowed.for_path("/vault/conversations/c1"), Some("GET, PUT, DELETE"));
        assert_eq!(allowed.for_path("/vault/conversations/c1/messages"), Some("POST"));
        assert_eq!(allowed.for_path("/vault/training/jobs/active"), Some("POST"));
        assert_eq!(allowed.for_path("/vault/training/jobs/j1"), Some("GET"));
        assert_eq!(allowed.for_path("/vault/conversations"), None);
        assert_eq!(allowed.for_path("/vault/conversations//messages"), None);
    }
}

//! Checks shared by the services: each failure names the field it is about.

use crate::error::{Result, VaultError};

/// A trimmed, non-empty text of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(VaultError::invalid("invalid_request", format!("{field}: must not be empty")));
    }
    if value.chars().count() > max {
        return Err(VaultError::invalid("invalid_request", format!("{field}: at most {max} characters")));
    }
    Ok(value.to_string())
}

/// One of `allowed`.
pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<String> {
    if allowed.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(VaultError::invalid("invalid_request", format!("{field}: must be one of {}", allowed.join(", "))))
    }
}

/// A page of a listing: `limit` 1..=`max` (default `default`), `offset` from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

impl Page {
    pub fn new(limit: Option<u32>, offset: Option<u32>, default: u32, max: u32) -> Result<Page> {
        let limit = limit.unwrap_or(default);
        if limit == 0 || limit > max {
            return Err(VaultError::invalid("invalid_request", format!("limit: must be between 1 and {max}")));
        }
        Ok(Page { limit, offset: offset.unwrap_or(0) })
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(text("title", "  a ", 5).unwrap(), "a");
        assert!(text("title", "   ", 5).unwrap_err().message.starts_with("title"));
        assert!(text("title", "abcdef", 5).is_err());
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(Page::new(None, None, 20, 100).unwrap(), Page { limit: 20, offset: 0 });
        assert!(Page::new(Some(0), None, 20, 100).unwrap_err().message.starts_with("limit"));
        assert!(Page::new(Some(101), None, 20, 100).is_err());
    }
}

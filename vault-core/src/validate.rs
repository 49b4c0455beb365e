//! Checks shared by the services: each failure names the field it is about.

use crate::error::{Result, VaultError};

/// A trimmed, non-empty text of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(VaultError::invalid_field(format!("{field}: must not be empty")));
    }
    storable(field, value)?;
    if value.chars().count() > max {
        return Err(VaultError::invalid_field(format!("{field}: at most {max} characters")));
    }
    Ok(value.to_string())
}

/// Refuses the NUL character, which PostgreSQL cannot store in text: refused alike on
/// both engines, rather than stored by one and a server error on the other.
pub fn storable(field: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(VaultError::invalid_field(format!("{field}: must not contain the NUL character (U+0000)")));
    }
    Ok(())
}

/// The one of `all` named `raw`, or an error naming the field and every choice.
pub fn choice<T: Copy>(field: &str, raw: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T> {
    all.iter().copied().find(|v| name(*v) == raw).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
        VaultError::invalid_field(format!("{field}: must be one of {}", names.join(", ")))
    })
}

/// One of `allowed`.
pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<String> {
    if allowed.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(VaultError::invalid_field(format!("{field}: must be one of {}", allowed.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(text("title", "  a ", 5).unwrap(), "a");
        assert!(text("title", "   ", 5).unwrap_err().message.starts_with("title"));
        assert!(text("title", "abcdef", 5).is_err());
        let nul = text("title", "a\0b", 5).unwrap_err();
        assert_eq!((nul.status(), nul.message.starts_with("title: must not contain")), (400, true));
    }

    #[test]
    fn one_of_names_the_choices() {
        assert_eq!(one_of("role", "user", &["user", "system"]).unwrap(), "user");
        assert_eq!(
            one_of("role", "robot", &["user", "system"]).unwrap_err().message,
            "role: must be one of user, system"
        );
    }
}

//! A page of a listing.

use crate::error::{Result, VaultError};

/// `limit` rows from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

/// How a listing pages: its default and largest `limit`.
#[derive(Debug, Clone, Copy)]
pub struct PageBounds {
    pub default: u32,
    pub max: u32,
}

impl PageBounds {
    /// `limit` 1..=max (default when absent), `offset` from 0.
    pub fn page(self, limit: Option<u32>, offset: Option<u32>) -> Result<Page> {
        let limit = limit.unwrap_or(self.default);
        if limit == 0 || limit > self.max {
            return Err(VaultError::invalid_field(format!("limit: must be between 1 and {}", self.max)));
        }
        Ok(Page { limit, offset: offset.unwrap_or(0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded() {
        let bounds = PageBounds { default: 20, max: 100 };
        assert_eq!(bounds.page(None, None).unwrap(), Page { limit: 20, offset: 0 });
        assert!(bounds.page(Some(0), None).unwrap_err().message.starts_with("limit"));
        assert!(bounds.page(Some(101), None).is_err());
        assert_eq!(bounds.page(Some(100), Some(7)).unwrap(), Page { limit: 100, offset: 7 });
    }
}

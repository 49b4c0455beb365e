//! Random secrets and identifiers, and the one hash keys are stored under.

use sha2::{Digest, Sha256};

use crate::error::{Result, VaultError};

/// `len` characters from [A-Za-z0-9], drawn from the OS CSPRNG without modulo bias.
pub fn random_alphanumeric(len: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| VaultError::internal("drawing random bytes", e))?;
        // 62 * 4 = 248: bytes at or above it are rejected so every character is equally likely.
        for byte in buf.iter().filter(|b| **b < 248) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(*byte % 62)]));
        }
    }
    Ok(out)
}

/// The SHA-256 of `raw` as lowercase hex.
pub fn sha256_hex(raw: &str) -> String {
    let digest = Sha256::digest(raw.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    hex
}

/// A new random id for a stored record (UUID v4).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_text_has_the_asked_length_and_alphabet() {
        let a = random_alphanumeric(100).unwrap();
        assert_eq!(a.len(), 100);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, random_alphanumeric(100).unwrap());
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}

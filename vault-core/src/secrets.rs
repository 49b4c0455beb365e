//! Random secrets and identifiers, and the one hash keys are stored under.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

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
    hex(&sha256(raw))
}

/// The SHA-256 of `raw`.
pub fn sha256(raw: &str) -> [u8; 32] {
    Sha256::digest(raw.as_bytes()).into()
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

/// A new random id for a stored record (UUID v4).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new request id, shaped as a UUID v4, made without a system call: one is made per
/// request, and it must be unique, not secret. A key drawn once from the OS is mixed with a
/// counter, so ids do not repeat within a process (the mix is a bijection), do not collide
/// across processes (the keys differ), and do not show how many requests came before.
pub fn request_id() -> String {
    let (key, n) = (unique_key(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&mix(n.wrapping_add(key[0])).to_le_bytes());
    bytes[8..].copy_from_slice(&mix(n.wrapping_add(key[1])).to_le_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// A number that does not repeat within a process for 2^32 calls, made the way
/// [`request_id`] is: written as eight hex digits (`{:08x}`), a suffix that makes an id
/// unique.
pub fn unique_suffix() -> u32 {
    let (key, n) = (unique_key(), COUNTER.fetch_add(1, Ordering::Relaxed));
    mix(n.wrapping_add(key[0])) as u32
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A key drawn once from the OS for [`request_id`] and [`unique_suffix`].
fn unique_key() -> &'static [u64; 2] {
    static KEY: OnceLock<[u64; 2]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: the clock still keeps processes apart.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes = now.as_nanos().to_le_bytes();
        }
        let seed = u128::from_le_bytes(bytes);
        [seed as u64, (seed >> 64) as u64]
    })
}

/// The SplitMix64 finalizer: a bijection on `u64` that scatters neighbouring inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
    fn request_ids_are_v4_uuids_that_do_not_repeat() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        let id = uuid::Uuid::parse_str(ids.iter().next().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 4);
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}

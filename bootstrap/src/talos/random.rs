//! Random values from the operating system, in the alphabets Talos uses.

use rand_core::{OsRng, RngCore};

pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A Kubernetes-style token `[a-z0-9]{first}.[a-z0-9]{second}`, as `talosctl gen secrets` makes
/// its bootstrap and trustd tokens.
pub fn token(first: usize, second: usize) -> String {
    let mut out = String::with_capacity(first + second + 1);
    push_token_chars(&mut out, first);
    out.push('.');
    push_token_chars(&mut out, second);
    out
}

fn push_token_chars(out: &mut String, count: usize) {
    // Bytes at or above the largest multiple of 36 are dropped so every character is equally likely.
    let limit = (256 / TOKEN_ALPHABET.len() * TOKEN_ALPHABET.len()) as u8;
    let mut added = 0;
    while added < count {
        for byte in bytes::<32>() {
            if byte < limit && added < count {
                out.push(char::from(
                    TOKEN_ALPHABET[usize::from(byte) % TOKEN_ALPHABET.len()],
                ));
                added += 1;
            }
        }
    }
}

/// Whether `token` has the shape [`token`] gives.
pub fn is_token(token: &str, first: usize, second: usize) -> bool {
    let valid = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
    };
    matches!(token.split_once('.'), Some((a, b)) if valid(a, first) && valid(b, second))
}

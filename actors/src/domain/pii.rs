//! PII tokenization, Blnk's scheme: a field's value becomes
//! `FPT:<display token>:<base64(nonce ‖ AES-256-GCM ciphertext ‖ tag)>`.
//!
//! - The ciphertext is AES-256-GCM under the 32-byte `tokenization_secret`, with a random
//!   96-bit nonce per value, so tokenizing the same value twice gives different tokens.
//! - The display token keeps the value's shape (letters stay letters of the same case,
//!   digits stay digits, everything else is kept), derived from HMAC-SHA256 of the value
//!   under the same key, so an operator can see "a 10-digit phone number" without the
//!   number. It is deterministic, as in Blnk: equal values show equal display tokens.
//!
//! Tokens are Blnk's byte for byte, so a database moved from Blnk with the same secret
//! detokenizes here. One difference: Blnk splits a token at its second `:`, so a value that
//! itself holds a `:` (kept in the display token) can never be detokenized there; here the
//! ciphertext is taken after the *last* `:` (base64 has none).
//!
//! Nothing here logs, and errors never carry a value or a token.

use aes_gcm::aead::{Aead, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of the secret, in bytes (AES-256).
pub const SECRET_BYTES: usize = 32;
/// Prefix of a format-preserving token.
pub const TOKEN_PREFIX: &str = "FPT:";
/// AES-GCM's nonce length, in bytes.
const NONCE_BYTES: usize = 12;
/// AES-GCM's tag length, in bytes.
const TAG_BYTES: usize = 16;

/// The longest token of a value of `chars` characters (each at most 4 UTF-8 bytes), in
/// characters: the prefix, a display token as long as the value, `:`, the base64 ciphertext.
pub fn token_chars_max(chars: usize) -> usize {
    let sealed = NONCE_BYTES + 4 * chars + TAG_BYTES;
    TOKEN_PREFIX.len() + chars + 1 + sealed.div_ceil(3) * 4
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PiiError {
    #[error("tokenization_secret must be exactly {SECRET_BYTES} bytes, not {0}")]
    SecretLength(usize),
    #[error("the stored value is not a token this server can read")]
    NotAToken,
    #[error("the token does not decrypt with this server's tokenization_secret")]
    WrongKey,
    #[error("the random number generator failed")]
    Random,
}

/// Tokenizes and detokenizes with one secret. Its `Debug` shows no key material.
#[derive(Clone)]
pub struct Tokenizer {
    cipher: Aes256Gcm,
    /// The HMAC key of the display token (the same secret, as Blnk uses it).
    display_mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokenizer(..)")
    }
}

impl Tokenizer {
    /// A tokenizer for a secret of exactly [`SECRET_BYTES`] bytes.
    pub fn new(secret: &[u8]) -> Result<Self, PiiError> {
        if secret.len() != SECRET_BYTES {
            return Err(PiiError::SecretLength(secret.len()));
        }
        let cipher =
            Aes256Gcm::new_from_slice(secret).map_err(|_| PiiError::SecretLength(secret.len()))?;
        let display_mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .map_err(|_| PiiError::SecretLength(secret.len()))?;
        Ok(Self {
            cipher,
            display_mac,
        })
    }

    /// `FPT:<display>:<ciphertext>` for `value`.
    pub fn tokenize(&self, value: &str) -> Result<String, PiiError> {
        let nonce = Nonce::try_generate().map_err(|_| PiiError::Random)?;
        let sealed = self
            .cipher
            .encrypt(&nonce, value.as_bytes())
            .map_err(|_| PiiError::Random)?;
        let mut payload = Vec::with_capacity(NONCE_BYTES + sealed.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&sealed);
        Ok(format!(
            "{TOKEN_PREFIX}{}:{}",
            self.display_token(value),
            STANDARD.encode(payload)
        ))
    }

    /// The value a token stands for: a format-preserving token, or (as Blnk also reads) a
    /// bare base64 ciphertext.
    pub fn detokenize(&self, token: &str) -> Result<String, PiiError> {
        let encoded = match token.strip_prefix(TOKEN_PREFIX) {
            Some(rest) => rest.rsplit_once(':').ok_or(PiiError::NotAToken)?.1,
            None => token,
        };
        let payload = STANDARD.decode(encoded).map_err(|_| PiiError::NotAToken)?;
        if payload.len() < NONCE_BYTES {
            return Err(PiiError::NotAToken);
        }
        let (nonce, sealed) = payload.split_at(NONCE_BYTES);
        let nonce = Nonce::try_from(nonce).map_err(|_| PiiError::NotAToken)?;
        let plain = self
            .cipher
            .decrypt(&nonce, sealed)
            .map_err(|_| PiiError::WrongKey)?;
        String::from_utf8(plain).map_err(|_| PiiError::NotAToken)
    }

    /// The value's shape with other letters and digits, chosen by HMAC-SHA256 of the value:
    /// character `i` takes byte `i mod 32` of the MAC (Blnk's `generateTokenWithFormat`).
    fn display_token(&self, value: &str) -> String {
        let mut mac = self.display_mac.clone();
        mac.update(value.as_bytes());
        let seed = mac.finalize().into_bytes();
        value
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let byte = seed[i % seed.len()];
                let shifted = |base: u8, range: u8| char::from(base + byte % range);
                match c {
                    'A'..='Z' => shifted(b'A', 26),
                    'a'..='z' => shifted(b'a', 26),
                    '0'..='9' => shifted(b'0', 10),
                    other => other,
                }
            })
            .collect()
    }
}

/// The display token of a format-preserving token (the value's shape, no plaintext).
pub fn display_part(token: &str) -> Option<&str> {
    Some(token.strip_prefix(TOKEN_PREFIX)?.rsplit_once(':')?.0)
}

/// Whether a stored value looks like a token (Blnk marks tokenized fields in `meta_data`;
/// this is only a consistency check).
pub fn is_token(value: &str) -> bool {
    value.starts_with(TOKEN_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

    fn tokenizer() -> Tokenizer {
        Tokenizer::new(SECRET).unwrap()
    }

    #[test]
    fn a_secret_must_be_exactly_32_bytes() {
        assert_eq!(
            Tokenizer::new(b"short").unwrap_err(),
            PiiError::SecretLength(5)
        );
        assert_eq!(
            Tokenizer::new(&[7u8; 33]).unwrap_err(),
            PiiError::SecretLength(33)
        );
        assert!(Tokenizer::new(&[7u8; 32]).is_ok());
    }

    #[test]
    fn a_token_keeps_the_shape_of_its_value_and_hides_it() {
        let token = tokenizer().tokenize("Ada Lovelace-42@x.io").unwrap();
        let display = token
            .strip_prefix(TOKEN_PREFIX)
            .unwrap()
            .rsplit_once(':')
            .unwrap()
            .0;
        assert_eq!(
            display.chars().count(),
            "Ada Lovelace-42@x.io".chars().count()
        );
        for (shown, original) in display.chars().zip("Ada Lovelace-42@x.io".chars()) {
            match original {
                'A'..='Z' => assert!(shown.is_ascii_uppercase()),
                'a'..='z' => assert!(shown.is_ascii_lowercase()),
                '0'..='9' => assert!(shown.is_ascii_digit()),
                other => assert_eq!(shown, other),
            }
        }
        assert!(!token.contains("Lovelace"));
        assert_eq!(display_part(&token), Some(display));
        assert_eq!(display_part("Lovelace"), None);
    }

    #[test]
    fn the_same_value_gets_a_new_ciphertext_each_time_but_the_same_display() {
        let tokenizer = tokenizer();
        let (a, b) = (
            tokenizer.tokenize("+2348012345678").unwrap(),
            tokenizer.tokenize("+2348012345678").unwrap(),
        );
        assert_ne!(a, b, "a random nonce per value");
        assert_eq!(a.rsplit_once(':').unwrap().0, b.rsplit_once(':').unwrap().0);
    }

    #[test]
    fn another_key_cannot_read_a_token_and_garbage_is_refused() {
        let token = tokenizer().tokenize("secret").unwrap();
        let other = Tokenizer::new(&[9u8; 32]).unwrap();
        assert_eq!(other.detokenize(&token).unwrap_err(), PiiError::WrongKey);
        assert_eq!(
            tokenizer().detokenize("FPT:abc").unwrap_err(),
            PiiError::NotAToken
        );
        assert_eq!(
            tokenizer().detokenize("not base64 !").unwrap_err(),
            PiiError::NotAToken
        );
        assert_eq!(
            tokenizer().detokenize("FPT:x:AAAA").unwrap_err(),
            PiiError::NotAToken
        );
    }

    #[test]
    fn no_token_is_longer_than_the_bound_for_its_value() {
        let tokenizer = tokenizer();
        for value in ["", "Ada", &"é".repeat(100), &"\u{1F600}".repeat(50)] {
            let token = tokenizer.tokenize(value).unwrap();
            assert!(token.chars().count() <= token_chars_max(value.chars().count()));
        }
        let widest = "\u{1F600}".repeat(64);
        assert_eq!(
            tokenizer.tokenize(&widest).unwrap().chars().count(),
            token_chars_max(64),
            "four-byte characters reach the bound"
        );
    }

    #[test]
    fn a_value_holding_colons_round_trips() {
        let tokenizer = tokenizer();
        let token = tokenizer.tokenize("a:b:c").unwrap();
        assert_eq!(tokenizer.detokenize(&token).unwrap(), "a:b:c");
    }

    #[test]
    fn debug_shows_no_key() {
        assert_eq!(format!("{:?}", tokenizer()), "Tokenizer(..)");
    }

    proptest! {
        #[test]
        fn every_value_round_trips(value in "\\PC{0,64}") {
            let tokenizer = tokenizer();
            let token = tokenizer.tokenize(&value).unwrap();
            prop_assert!(is_token(&token));
            prop_assert_eq!(tokenizer.detokenize(&token).unwrap(), value);
        }
    }
}

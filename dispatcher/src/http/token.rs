//! The admin API's bearer token.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The admin token, kept as its SHA-256 so that comparing takes the same time whatever the
/// guess (its length included).
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> Self {
        AdminToken(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `given` is the token.
    pub fn accepts(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        self.0.ct_eq(&given).into()
    }
}

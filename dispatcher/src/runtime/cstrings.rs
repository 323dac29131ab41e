//! NUL-terminated strings in one buffer (an environment, or argv), as `environ_get` hands
//! them to the guest: built by appending, copied into the guest in one go.

use std::fmt;

/// `KEY=VALUE` entries (or arguments), each followed by a NUL, in one buffer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CStrings {
    bytes: Vec<u8>,
    /// Where each string starts in `bytes`.
    starts: Vec<u32>,
}

impl CStrings {
    /// Empty, with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        CStrings {
            bytes: Vec::with_capacity(bytes),
            starts: Vec::with_capacity(bytes / 16),
        }
    }

    /// From `(key, value)` pairs, in order.
    pub fn from_vars<K: AsRef<str>, V: AsRef<str>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut s = CStrings::default();
        for (k, v) in vars {
            s.push_var(k.as_ref(), v.as_ref().as_bytes());
        }
        s
    }

    /// From plain strings (argv).
    pub fn from_items<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Self {
        let mut s = CStrings::default();
        for item in items {
            s.push(item.as_ref().as_bytes());
        }
        s
    }

    /// Appends one string. A NUL inside `item` is dropped (the guest would see the entry end
    /// there).
    pub fn push(&mut self, item: &[u8]) {
        self.begin();
        self.extend_clean(item);
        self.end();
    }

    /// Appends `key=value`.
    pub fn push_var(&mut self, key: &str, value: &[u8]) {
        self.begin();
        self.extend_clean(key.as_bytes());
        self.bytes.push(b'=');
        self.extend_clean(value);
        self.end();
    }

    /// Appends `key=` and the formatted value, without an intermediate `String`.
    pub fn push_var_fmt(&mut self, key: &str, value: fmt::Arguments<'_>) {
        self.begin();
        self.extend_clean(key.as_bytes());
        self.bytes.push(b'=');
        let start = self.bytes.len();
        // Writing into a Vec cannot fail.
        let _ = std::io::Write::write_fmt(&mut self.bytes, value);
        if self.bytes[start..].contains(&0) {
            let value: Vec<u8> = self.bytes.drain(start..).filter(|&b| b != 0).collect();
            self.bytes.extend_from_slice(&value);
        }
        self.end();
    }

    /// Appends every entry of `other`.
    pub fn append(&mut self, other: &CStrings) {
        let offset = self.len();
        self.starts.extend(other.starts.iter().map(|s| s + offset));
        self.bytes.extend_from_slice(&other.bytes);
    }

    /// How many strings.
    pub fn count(&self) -> u32 {
        // At most one per byte, and the bytes fit a u32 (see `begin`).
        self.starts.len() as u32
    }

    /// The buffer: every string with its NUL.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The offset in [`CStrings::bytes`] at which each string starts.
    pub fn starts(&self) -> impl Iterator<Item = u32> + '_ {
        self.starts.iter().copied()
    }

    /// The strings, without their NULs.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let body = self.bytes.strip_suffix(&[0]).unwrap_or(&self.bytes);
        body.split(|&b| b == 0).take(self.starts.len())
    }

    /// The value of `key`, if an entry `key=...` is present (the last one wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter()
            .filter_map(|e| {
                let rest = e.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
                std::str::from_utf8(rest).ok()
            })
            .last()
    }

    fn extend_clean(&mut self, s: &[u8]) {
        if s.contains(&0) {
            self.bytes.extend(s.iter().filter(|&&b| b != 0));
        } else {
            self.bytes.extend_from_slice(s);
        }
    }

    fn len(&self) -> u32 {
        // Saturates: past 4 GiB `environ_sizes_get` refuses the whole buffer anyway.
        u32::try_from(self.bytes.len()).unwrap_or(u32::MAX)
    }

    fn begin(&mut self) {
        self.starts.push(self.len());
    }

    fn end(&mut self) {
        self.bytes.push(0);
    }
}

impl fmt::Debug for CStrings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_offsets_and_lookup() {
        let mut env = CStrings::from_vars([("A", "1"), ("B", "")]);
        env.push_var_fmt("PORT", format_args!("{}", 8080));
        env.push_var("N\0UL", b"x\0y");
        let mut more = CStrings::default();
        more.push_var("A", b"2");
        env.append(&more);
        assert_eq!(env.count(), 5);
        assert_eq!(env.bytes(), b"A=1\0B=\0PORT=8080\0NUL=xy\0A=2\0");
        assert_eq!(env.starts().collect::<Vec<_>>(), [0, 4, 7, 17, 24]);
        assert_eq!(env.iter().count(), 5);
        assert_eq!(env.get("A"), Some("2"));
        assert_eq!(env.get("B"), Some(""));
        assert_eq!(env.get("PORT"), Some("8080"));
        assert_eq!(env.get("P"), None);
        assert_eq!(CStrings::default().starts().count(), 0);
        assert_eq!(CStrings::default().iter().count(), 0);
        let argv = CStrings::from_items(["prog", ""]);
        assert_eq!(argv.iter().collect::<Vec<_>>(), [&b"prog"[..], b""]);
    }
}

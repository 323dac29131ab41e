//! The on-disk cache of compiled modules, keyed by the wasm's content hash and the engine's
//! settings, so a restart with an unchanged `.wasm` loads machine code instead of compiling.
//!
//! An artifact is wasmtime's serialized module followed by the SHA-256 of its file name and
//! those bytes. The digest is checked before wasmtime sees a byte, so a truncated, torn or
//! bit-flipped file (a full disk, a crash before the data reached the disk, a bad sector), or
//! one under another module's name, is never loaded as code: it is reported, set aside and
//! compiled again. The digest guards against damage, not against someone who can write the
//! folder; the folders stay trusted.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// Bytes of the digest at an artifact's end.
const DIGEST_LEN: usize = 32;

/// Mixed into the engine key: the artifact's layout (serialized module + SHA-256 trailer).
/// Changing the layout changes every file name, so older artifacts are not looked at.
const FORMAT: &str = "cwasm+sha256/1";

/// A folder of `<wasm-sha256>-<engine-hash>.cwasm` files, and optionally a read-only one
/// of the same shape (filled at image build time) looked in second.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    /// Where compiled artifacts are written and looked for first; `None`: nowhere.
    /// Trusted not to be written by anyone else; each file's digest is checked before load.
    dir: Option<PathBuf>,
    /// A read-only folder of artifacts, looked in after `dir`. Trusted and checked as `dir`
    /// is; a damaged file there is ignored, never deleted.
    precompiled: Option<PathBuf>,
    /// Hash of everything about the engine that makes an artifact compatible (version,
    /// target, settings) and of [`FORMAT`], so a changed engine never loads a stale artifact.
    engine_key: String,
    /// Set once `dir` has refused a write: the warning is logged once per process, not per
    /// module (shared by the clones the background compiler holds).
    unwritable: Arc<AtomicBool>,
}

/// Where a module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled now (and stored, if a cache is configured).
    Compiled,
    /// Loaded from the cache.
    Cached,
}

/// The hex SHA-256 of a module's bytes: its identity in the cache and in logs.
pub fn content_hash(wasm: &[u8]) -> String {
    let digest = Sha256::digest(wasm);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a cached artifact was not used.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    #[error("it is damaged (truncated or changed): its bytes do not match its SHA-256")]
    Damaged,
    #[error("wasmtime refused it: {0:#}")]
    Refused(wasmtime::Error),
}

impl ModuleCache {
    /// A cache over `dir` (created if missing) and `precompiled`. A `dir` that cannot be
    /// created is warned about once and then only costs compiles: the platform still serves.
    pub fn new(dir: Option<PathBuf>, precompiled: Option<PathBuf>, engine: &Engine) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        FORMAT.hash(&mut h);
        let cache = ModuleCache {
            dir,
            precompiled,
            engine_key: format!("{:016x}", h.finish()),
            unwritable: Arc::default(),
        };
        if let Some(dir) = &cache.dir {
            if let Err(e) = std::fs::create_dir_all(dir) {
                cache.cannot_write(dir, &e.into());
            }
        }
        cache
    }

    fn file_name(&self, hash: &str) -> String {
        format!("{hash}-{}.cwasm", self.engine_key)
    }

    /// The cached module for `hash`, if there is a usable one: from the cache, else from the
    /// precompiled folder. A damaged or refused file is logged by name and skipped (and
    /// removed from the cache folder, so the compile that follows stores a good one).
    pub fn load(&self, engine: &Engine, hash: &str) -> Option<Module> {
        let name = self.file_name(hash);
        let folders = [(&self.dir, true), (&self.precompiled, false)];
        folders
            .into_iter()
            .filter_map(|(dir, owned)| Some((dir.as_ref()?.join(&name), owned)))
            .filter(|(path, _)| path.exists())
            .find_map(|(path, owned)| match deserialize(engine, &path) {
                Ok(module) => Some(module),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached module: {e}; compiling it again");
                    if owned {
                        if let Err(e) = std::fs::remove_file(&path) {
                            tracing::debug!(path = %path.display(), "cannot remove it: {e}");
                        }
                    }
                    None
                }
            })
    }

    /// Compiles `wasm` and stores the artifact. A cache that cannot be written only costs a
    /// compile next time; it is logged once, not fatal.
    pub fn compile(&self, engine: &Engine, wasm: &[u8], hash: &str) -> wasmtime::Result<Module> {
        let module = Module::from_binary(engine, wasm)?;
        let Some(dir) = &self.dir else {
            return Ok(module);
        };
        if let Err(e) = store(&module, &dir.join(self.file_name(hash))) {
            self.cannot_write(dir, &e);
        }
        Ok(module)
    }

    /// Warns that `dir` cannot be written, the first time only.
    fn cannot_write(&self, dir: &Path, e: &anyhow::Error) {
        if !self.unwritable.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                dir = %dir.display(),
                "the compile cache cannot be written ({e:#}): serving anyway, but modules are compiled again at every start (said once)"
            );
        }
    }
}

/// Writes the artifact and its digest to a temporary file, then renames it into place, so a
/// reader never sees a half-written artifact. A failed write (a full disk) leaves nothing.
fn store(module: &Module, path: &Path) -> anyhow::Result<()> {
    let mut bytes = module
        .serialize()
        .map_err(|e| anyhow::anyhow!("serialize: {e}"))?;
    let digest = digest(path, &bytes);
    bytes.extend_from_slice(&digest);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        if let Err(e) = std::fs::remove_file(&tmp) {
            tracing::debug!(path = %tmp.display(), "cannot remove a partial artifact: {e}");
        }
        return Err(anyhow::anyhow!("{}: {e}", path.display()));
    }
    Ok(())
}

/// Reads an artifact, checks its digest, and only then hands the bytes to wasmtime.
fn deserialize(engine: &Engine, path: &Path) -> Result<Module, Unusable> {
    let bytes = std::fs::read(path).map_err(Unusable::Read)?;
    let code = checked(path, &bytes).ok_or(Unusable::Damaged)?;
    deserialize_checked(engine, code).map_err(Unusable::Refused)
}

/// The SHA-256 of the artifact's file name and its serialized module: what its trailer holds.
fn digest(path: &Path, code: &[u8]) -> [u8; DIGEST_LEN] {
    let name = path.file_name().unwrap_or_default();
    let mut h = Sha256::new();
    h.update(name.as_encoded_bytes());
    h.update(code);
    h.finalize().into()
}

/// The serialized module inside the artifact at `path`, if its trailing digest matches.
fn checked<'a>(path: &Path, artifact: &'a [u8]) -> Option<&'a [u8]> {
    let split = artifact.len().checked_sub(DIGEST_LEN)?;
    let (code, trailer) = artifact.split_at(split);
    (digest(path, code) == trailer).then_some(code)
}

#[allow(unsafe_code)]
fn deserialize_checked(engine: &Engine, code: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: wasmtime requires bytes that `Module::serialize` of a compatible engine
    // produced. These are the bytes a `store` of this cache wrote under this file name: their
    // SHA-256 matched the digest written with them, the name carries the engine's
    // compatibility hash, and wasmtime checks the header, version and settings again. The bytes are in
    // memory, so the file changing after the check cannot reach the code.
    unsafe { Module::deserialize(engine, code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str =
        r#"(module (func (export "_start")) (func (export "answer") (result i32) i32.const 42))"#;

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        engine: Engine,
        cache: ModuleCache,
        wasm: Vec<u8>,
        hash: String,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let engine = Engine::default();
        let cache = ModuleCache::new(Some(dir.clone()), None, &engine);
        let wasm = wat::parse_str(WAT).unwrap();
        let hash = content_hash(&wasm);
        Fixture {
            _tmp: tmp,
            dir,
            engine,
            cache,
            wasm,
            hash,
        }
    }

    impl Fixture {
        fn artifact(&self) -> PathBuf {
            self.dir.join(self.cache.file_name(&self.hash))
        }

        fn compiled(&self) {
            self.cache
                .compile(&self.engine, &self.wasm, &self.hash)
                .unwrap();
            assert!(self.artifact().exists());
        }
    }

    fn answers(module: &Module) -> bool {
        module.get_export("answer").is_some()
    }

    #[test]
    fn a_stored_artifact_loads_and_carries_its_digest() {
        let f = fixture();
        f.compiled();
        let bytes = std::fs::read(f.artifact()).unwrap();
        assert!(checked(&f.artifact(), &bytes).is_some());
        assert!(answers(&f.cache.load(&f.engine, &f.hash).unwrap()));
    }

    /// Damages the artifact with `damage`, and checks that it is not loaded, is removed, and
    /// that the next compile stores a good one again.
    fn refused_after(damage: impl FnOnce(&mut Vec<u8>)) {
        let f = fixture();
        f.compiled();
        let mut bytes = std::fs::read(f.artifact()).unwrap();
        damage(&mut bytes);
        std::fs::write(f.artifact(), &bytes).unwrap();
        assert!(f.cache.load(&f.engine, &f.hash).is_none());
        assert!(!f.artifact().exists(), "the damaged artifact was kept");
        f.compiled();
        assert!(answers(&f.cache.load(&f.engine, &f.hash).unwrap()));
    }

    #[test]
    fn a_truncated_artifact_is_refused_removed_and_stored_again() {
        refused_after(|b| b.truncate(b.len() / 2));
        refused_after(|b| b.truncate(b.len() - 1));
        refused_after(Vec::clear);
    }

    #[test]
    fn a_flipped_byte_is_refused_wherever_it_is() {
        refused_after(|b| {
            let mid = b.len() / 2;
            b[mid] ^= 0x01;
        });
        refused_after(|b| b[0] ^= 0x80);
        refused_after(|b| {
            let last = b.len() - 1;
            b[last] ^= 0x01;
        });
    }

    #[test]
    fn an_artifact_under_another_modules_name_is_refused() {
        let f = fixture();
        f.compiled();
        let other = content_hash(b"another module");
        let moved = f.dir.join(f.cache.file_name(&other));
        std::fs::copy(f.artifact(), &moved).unwrap();
        assert!(f.cache.load(&f.engine, &other).is_none());
        assert!(!moved.exists());
        assert!(answers(&f.cache.load(&f.engine, &f.hash).unwrap()));
    }

    #[test]
    fn another_engines_artifact_is_refused_even_with_a_good_digest() {
        let f = fixture();
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let other = Engine::new(&config).unwrap();
        let mut bytes = Module::new(&other, &f.wasm).unwrap().serialize().unwrap();
        bytes.extend_from_slice(&digest(&f.artifact(), &bytes));
        std::fs::create_dir_all(&f.dir).unwrap();
        std::fs::write(f.artifact(), &bytes).unwrap();
        assert!(matches!(
            deserialize(&f.engine, &f.artifact()),
            Err(Unusable::Refused(_))
        ));
        assert!(f.cache.load(&f.engine, &f.hash).is_none());
    }

    #[test]
    fn a_damaged_precompiled_artifact_is_ignored_not_removed() {
        let f = fixture();
        f.compiled();
        let mut bytes = std::fs::read(f.artifact()).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        let image = f._tmp.path().join("image");
        std::fs::create_dir_all(&image).unwrap();
        let shipped = image.join(f.cache.file_name(&f.hash));
        std::fs::write(&shipped, &bytes).unwrap();
        let reader = ModuleCache::new(None, Some(image), &f.engine);
        assert!(reader.load(&f.engine, &f.hash).is_none());
        assert!(
            shipped.exists(),
            "a file of the read-only folder was removed"
        );
    }

    #[test]
    fn an_unwritable_cache_still_compiles_and_says_so() {
        let f = fixture();
        // A cache "folder" that is a file: every write fails, as on a read-only disk.
        let blocked = f._tmp.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let cache = ModuleCache::new(Some(blocked.join("sub")), None, &f.engine);
        assert!(cache.unwritable.load(Ordering::SeqCst));
        for _ in 0..3 {
            let module = cache.compile(&f.engine, &f.wasm, &f.hash).unwrap();
            assert!(answers(&module));
        }
        assert!(cache.load(&f.engine, &f.hash).is_none());
    }
}

//! The on-disk cache of compiled modules, keyed by the wasm's content hash and the engine's
//! settings, so a restart with an unchanged `.wasm` loads machine code instead of compiling.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// A folder of `<wasm-sha256>-<engine-hash>.cwasm` files, and optionally a read-only one
/// of the same shape (filled at image build time) looked in second.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    /// Where compiled artifacts are written and looked for first; `None`: nowhere.
    /// Trusted: its files are loaded as machine code.
    dir: Option<PathBuf>,
    /// A read-only folder of artifacts, looked in after `dir`. Trusted as `dir` is.
    precompiled: Option<PathBuf>,
    /// Hash of everything about the engine that makes an artifact compatible (version,
    /// target, settings), so a changed engine never loads a stale artifact.
    engine_key: String,
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

impl ModuleCache {
    pub fn new(
        dir: Option<PathBuf>,
        precompiled: Option<PathBuf>,
        engine: &Engine,
    ) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ModuleCache {
            dir,
            precompiled,
            engine_key: format!("{:016x}", h.finish()),
        })
    }

    fn file_name(&self, hash: &str) -> String {
        format!("{hash}-{}.cwasm", self.engine_key)
    }

    /// The cached module for `hash`, if there is a usable one: from the cache, else from the
    /// precompiled folder.
    pub fn load(&self, engine: &Engine, hash: &str) -> Option<Module> {
        let name = self.file_name(hash);
        [&self.dir, &self.precompiled]
            .into_iter()
            .flatten()
            .map(|dir| dir.join(&name))
            .filter(|path| path.exists())
            .find_map(|path| match deserialize(engine, &path) {
                Ok(module) => Some(module),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached module: {e}");
                    None
                }
            })
    }

    /// Compiles `wasm` and stores the artifact. A cache that cannot be written only costs a
    /// compile next time; it is logged, not fatal.
    pub fn compile(&self, engine: &Engine, wasm: &[u8], hash: &str) -> wasmtime::Result<Module> {
        let module = Module::from_binary(engine, wasm)?;
        let Some(dir) = &self.dir else {
            return Ok(module);
        };
        let path = dir.join(self.file_name(hash));
        if let Err(e) = self.store(&module, &path) {
            tracing::warn!(path = %path.display(), "cannot write the compile cache: {e:#}");
        }
        Ok(module)
    }

    fn store(&self, module: &Module, path: &Path) -> anyhow::Result<()> {
        let bytes = module
            .serialize()
            .map_err(|e| anyhow::anyhow!("serialize: {e}"))?;
        // Write then rename, so a reader never sees a half-written artifact.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    // SAFETY: wasmtime requires that the file holds an artifact this engine configuration
    // produced and that nobody else modifies it. The cache folder is the dispatcher's own; the
    // file name carries the engine's compatibility hash, files are written whole and renamed
    // into place, and wasmtime still checks the header and version before using the code.
    unsafe { Module::deserialize_file(engine, path) }
}

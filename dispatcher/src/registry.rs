//! The deployed functions: each manifest's spec with its compiled module, and the route table.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::manifest::{FunctionSpec, ManifestError};
use crate::route::RouteTable;
use crate::runtime::{Invocation, Prepared, Runtime};

/// One deployed function.
pub struct Function {
    /// The name, shared with every log line and invocation.
    pub name: Arc<str>,
    /// What its manifest says.
    pub spec: FunctionSpec,
    /// The compiled, pre-linked module.
    pub module: Prepared,
    /// Caps the instances in flight at `limits.max_concurrency`.
    pub permits: Arc<Semaphore>,
}

impl Function {
    /// An invocation of this function with its limits and network policy.
    pub fn invocation(
        &self,
        env: Vec<(String, String)>,
        stdin: bytes::Bytes,
        stdout_cap: usize,
    ) -> Invocation {
        Invocation {
            function: self.name.clone(),
            args: vec![self.spec.name.clone()],
            env,
            stdin,
            memory_bytes: self.spec.limits.memory_bytes,
            timeout: self.spec.limits.timeout,
            stdout_cap,
            net: self.spec.network.clone(),
        }
    }
}

/// Everything that is deployed.
#[derive(Default)]
pub struct Registry {
    /// By name.
    pub functions: BTreeMap<String, Arc<Function>>,
    /// HTTP routes to functions.
    pub routes: RouteTable<Arc<Function>>,
}

impl Registry {
    /// Compiles every spec (or loads it from the cache) and binds its route. Returns the
    /// functions that could be deployed and an error (naming the manifest and the field) for
    /// each one that could not: a module that does not compile or link, or a route that
    /// overlaps one already bound.
    pub fn build(runtime: &Runtime, specs: Vec<FunctionSpec>) -> (Registry, Vec<ManifestError>) {
        let mut registry = Registry::default();
        let mut errors = Vec::new();
        for mut spec in specs {
            let module = match runtime.prepare(&spec.wasm) {
                Ok(m) => m,
                Err(e) => {
                    errors.push(ManifestError::new(
                        &spec.manifest_path,
                        "wasm",
                        format!("{}: {e}", spec.wasm_path.display()),
                    ));
                    continue;
                }
            };
            tracing::info!(
                function = %spec.name,
                hash = &module.hash[..12],
                origin = ?module.origin,
                ms = module.load_time.as_millis() as u64,
                "module ready"
            );
            // The bytes are compiled; keep only the machine code.
            spec.wasm = Vec::new();
            let function = Arc::new(Function {
                name: spec.name.as_str().into(),
                permits: Arc::new(Semaphore::new(spec.limits.max_concurrency as usize)),
                spec,
                module,
            });
            if let Some(http) = &function.spec.http {
                if let Err(owner) = registry.routes.insert(
                    http.pattern.clone(),
                    http.methods.clone(),
                    function.clone(),
                ) {
                    errors.push(ManifestError::new(
                        &function.spec.manifest_path,
                        "trigger.http.path",
                        format!(
                            "route `{}` overlaps the route of function `{}`: expected a path (or methods) that no other function serves",
                            http.pattern, owner.name
                        ),
                    ));
                    continue;
                }
            }
            registry
                .functions
                .insert(function.spec.name.clone(), function);
        }
        (registry, errors)
    }
}

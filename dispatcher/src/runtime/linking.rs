//! The one place where host calls meet the `Linker`: the preview1 subset and the socket
//! extension are both defined here, every other `wasi_snapshot_preview1` import a module
//! declares is bound to a stub, and `sock_accept` gets the arity the module asks for.

use wasmtime::{ExternType, InstancePre, Linker, Module, Val, ValType};

use super::abi::{Errno, MODULE};
use super::host::Host;
use super::{preview1, sockets};

/// Defines every host call, with WasmEdge's two-argument `sock_accept`.
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    preview1::add_to_linker(linker)?;
    #[cfg(test)]
    linker.func_wrap(MODULE, TEST_PANIC, |_: wasmtime::Caller<'_, Host>| -> i32 {
        panic!("a host call's own bug")
    })?;
    sockets::add_to_linker(linker)
}

/// A host call that panics, for the runtime's tests of what a panic in the host does.
#[cfg(test)]
pub const TEST_PANIC: &str = "dispatcher_test_panic";

/// Whether the host defines this `wasi_snapshot_preview1` function (preview1 subset or socket
/// extension).
pub fn provides(name: &str) -> bool {
    preview1::PROVIDED.contains(&name)
        || sockets::PROVIDED.contains(&name)
        || (cfg!(test) && name == "dispatcher_test_panic")
}

/// Pre-links `module` against `linker` (which [`add_to_linker`] filled). A module that imports
/// functions the host does not provide, or preview1's own three-argument `sock_accept`, gets a
/// copy of the linker with stubs and that `sock_accept`. Errors are for the deployer to read.
pub fn pre_link(linker: &Linker<Host>, module: &Module) -> Result<InstancePre<Host>, String> {
    let has_missing = module
        .imports()
        .any(|i| i.module() != MODULE || !provides(i.name()));
    // preview1's own `sock_accept` takes three arguments, WasmEdge's two.
    let accept_params = module.imports().find_map(|i| match i.ty() {
        ExternType::Func(f) if i.module() == MODULE && i.name() == "sock_accept" => {
            Some(f.params().len())
        }
        _ => None,
    });
    let pre = if has_missing || accept_params == Some(3) {
        let mut linker = linker.clone();
        linker.allow_shadowing(true);
        if accept_params == Some(3) {
            sockets::define_accept(&mut linker, 3)
                .map_err(|e| format!("cannot bind sock_accept: {e}"))?;
        }
        stub_missing(&mut linker, module)?;
        linker.instantiate_pre(module)
    } else {
        linker.instantiate_pre(module)
    };
    pre.map_err(|e| format!("cannot link the module: {e:#}"))
}

/// Binds every `wasi_snapshot_preview1` import of `module` that the host does not provide to a
/// stub: functions returning one `i32` get `ENOSYS`; any other shape traps with a clear message
/// when called. Imports from other modules are an error the caller reports at load time.
fn stub_missing(linker: &mut Linker<Host>, module: &Module) -> Result<(), String> {
    for import in module.imports() {
        if import.module() != MODULE {
            return Err(format!(
                "the module imports `{}::{}`, which the host does not provide: expected imports from `{MODULE}` only",
                import.module(),
                import.name()
            ));
        }
        if provides(import.name()) {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            return Err(format!(
                "the module imports `{MODULE}::{}` as a non-function, which the host does not provide",
                import.name()
            ));
        };
        let errno_result =
            ty.results().len() == 1 && matches!(ty.results().next(), Some(ValType::I32));
        let name = import.name().to_string();
        linker
            .func_new(MODULE, import.name(), ty, move |_c, _params, results| {
                if errno_result {
                    results[0] = Val::I32(Errno::Nosys.code());
                    Ok(())
                } else {
                    Err(wasmtime::Error::msg(format!(
                        "the guest called `{MODULE}::{name}`, which this host does not support"
                    )))
                }
            })
            .map_err(|e| format!("cannot bind `{MODULE}::{}`: {e}", import.name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provides_both_call_sets_and_nothing_else() {
        assert!(provides("fd_write"));
        assert!(provides("poll_oneoff"));
        assert!(provides("sock_accept"));
        assert!(provides("sock_getaddrinfo"));
        assert!(!provides("path_open"));
        assert!(!provides("sock_sendmsg"));
        for name in preview1::PROVIDED {
            assert!(!sockets::PROVIDED.contains(name), "{name} defined twice");
        }
    }
}

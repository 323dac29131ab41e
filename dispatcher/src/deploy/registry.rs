//! The deployed set at one moment: functions by name and the route table.
//! A [`Registry`] never changes; a deploy builds a new one and [`Live`] swaps it in, so a
//! request in flight keeps the [`Function`] it started with.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::function::Function;
use crate::manifest::RouteTable;

/// A route that another function already serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {route} belongs to function {owner}")]
pub struct RouteConflict {
    /// The function that could not be bound.
    pub function: String,
    /// Its route, as `METHODS /path`.
    pub route: String,
    /// The function that serves it.
    pub owner: String,
}

/// Everything that is deployed, at one moment.
#[derive(Default)]
pub struct Registry {
    /// By name.
    pub functions: BTreeMap<String, Arc<Function>>,
    /// HTTP routes to functions.
    pub routes: RouteTable<Arc<Function>>,
}

impl Registry {
    /// Binds every function's route, in name order. A function whose route overlaps one
    /// already bound is left out and reported.
    pub fn assemble(
        functions: impl IntoIterator<Item = Arc<Function>>,
    ) -> (Registry, Vec<RouteConflict>) {
        let mut registry = Registry::default();
        let mut conflicts = Vec::new();
        let mut all: Vec<Arc<Function>> = functions.into_iter().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        for f in all {
            match registry.bind(f) {
                Ok(()) => {}
                Err(c) => conflicts.push(c),
            }
        }
        (registry, conflicts)
    }

    fn bind(&mut self, function: Arc<Function>) -> Result<(), RouteConflict> {
        if let Some(http) = &function.spec.http {
            if let Err(owner) =
                self.routes
                    .insert(http.pattern.clone(), http.methods.clone(), function.clone())
            {
                return Err(RouteConflict {
                    function: function.spec.name.clone(),
                    route: function.route_text().unwrap_or_default(),
                    owner: owner.spec.name.clone(),
                });
            }
        }
        self.functions.insert(function.spec.name.clone(), function);
        Ok(())
    }

    /// This registry with `function` added, or replacing the function of the same name.
    pub fn with(&self, function: Arc<Function>) -> Result<Registry, RouteConflict> {
        let mut next = Registry::default();
        for (name, f) in &self.functions {
            if *name != function.spec.name {
                // These were bound together before, so they still fit together.
                let _bound = next.bind(f.clone());
            }
        }
        next.bind(function)?;
        Ok(next)
    }

    /// This registry without the function `name`.
    pub fn without(&self, name: &str) -> Registry {
        let others = self
            .functions
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(_, f)| f.clone());
        Registry::assemble(others).0
    }

    /// One line per route, `METHODS /path -> function`, for the start-up log.
    pub fn route_lines(&self) -> Vec<String> {
        self.functions
            .values()
            .filter_map(|f| Some(format!("{} -> {}", f.route_text()?, f.name)))
            .collect()
    }
}

/// The registry being served, swapped whole by deploys. Readers never wait; each request
/// takes the registry of the moment it arrived.
pub struct Live {
    current: ArcSwap<Registry>,
    changes: watch::Sender<u64>,
}

impl Live {
    pub fn new(registry: Registry) -> Self {
        Live {
            current: ArcSwap::from_pointee(registry),
            changes: watch::Sender::new(0),
        }
    }

    /// The registry now.
    pub fn load(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    /// The registry now, for a short look (no reference count traffic).
    pub fn peek(&self) -> arc_swap::Guard<Arc<Registry>> {
        self.current.load()
    }

    /// Serves `registry` from now on and tells the subscribers.
    pub fn store(&self, registry: Registry) {
        self.current.store(Arc::new(registry));
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes on every [`store`](Live::store).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

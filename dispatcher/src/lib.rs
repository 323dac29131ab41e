//! The dispatcher: a serverless platform that serves WebAssembly functions from manifests.
//!
//! The pipeline is the module list: [`manifest`] (files to specs) -> [`registry`] (specs to
//! compiled functions and routes) -> [`server`] (HTTP trigger) -> [`runtime`] (a fresh
//! instance per event), with [`cgi`] as the contract between the trigger and the function.

pub mod admin;
pub mod catalog;
pub mod cgi;
pub mod client;
pub mod deploy;
pub mod manifest;
pub mod registry;
pub mod route;
pub mod runtime;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod watch;

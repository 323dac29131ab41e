//! HTTP: the listener, the trigger that runs functions for requests, and the admin API under
//! `/_dispatcher/`, with the request-body and response helpers they share.

mod admin;
mod body;
mod connection;
mod deploy_form;
mod metrics;
mod observe;
mod refusals;
mod response;
mod server;
mod state;
mod tally;
mod token;
mod trigger;
mod ui;

/// For the `multipart` fuzz target.
pub(crate) use deploy_form::{parse_boundary, parse_form};
pub use metrics::serve_metrics;
pub use server::{serve, while_starting};
pub use state::{AppState, HttpConfig};
pub use token::AdminToken;

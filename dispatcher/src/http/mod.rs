//! HTTP: the listener, the trigger that runs functions for requests, and the admin API under
//! `/_dispatcher/`, with the request-body and response helpers they share.

mod admin;
mod body;
mod metrics;
mod observe;
mod response;
mod server;
mod state;
mod token;
mod trigger;
mod ui;

pub use metrics::serve_metrics;
pub use server::{serve, while_starting};
pub use state::{AppState, HttpConfig};
pub use token::AdminToken;

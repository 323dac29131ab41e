//! The dispatcher's integration tests, as one binary (one link, one `harness`): each module
//! is one area of the platform, driven over HTTP, the CLI and the shared MariaDB.

mod harness;

mod clients;
mod cluster;
mod dashboard;
mod dbpool;
mod deploy;
mod deploy_files;
mod faults;
mod hostile;
mod http;
mod k8s;
mod layout;
mod lifecycle;
mod manifests;
mod observe;
mod orders;
mod schedules;
mod traces;

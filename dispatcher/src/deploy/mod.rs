//! Changing what is deployed: validate, compile, record a version in the catalog, swap the
//! registry; follow the catalog's changes made by other replicas; redeploy a watched folder;
//! list what is deployed.

mod deployments;
mod error;
mod folder;
mod listing;
mod registry;
mod sync;
mod watch;

pub use deployments::{Deployments, Upload};
pub use error::DeployError;
pub use registry::Live;
pub use watch::run as watch;

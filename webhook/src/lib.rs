//! The webhook's parts: [`policy`] says what to inject, [`mutate`] applies it to one
//! Deployment (pure, no I/O), [`server`] speaks AdmissionReview over HTTPS.

pub mod mutate;
pub mod policy;
pub mod server;

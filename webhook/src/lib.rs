//! The webhook's parts: [`policy`] says what to inject, [`mutate`] applies it to one
//! Deployment (pure, no I/O) with [`resources`] and exact [`quantity`] arithmetic, [`hpa`]
//! derives the HorizontalPodAutoscaler that [`reconcile`] applies, [`cluster`] caches what a
//! review reads from the API server, [`server`] speaks AdmissionReview over HTTPS and
//! [`metrics`] counts it all.

pub mod cluster;
pub mod hpa;
pub mod metrics;
pub mod mutate;
pub mod policy;
pub mod quantity;
pub mod reconcile;
pub mod resources;
pub mod server;

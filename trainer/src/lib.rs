//! placeholder
pub mod config;
pub mod metrics;
pub mod chat_text;
pub mod plot;

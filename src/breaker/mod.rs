//! Circuit breakers: the state machine of one breaker ([`machine`]) and the
//! service's persisted set of them, one per (bot, dependency) ([`circuits`]).

pub mod circuits;
pub mod machine;

pub use circuits::*;
pub use machine::*;

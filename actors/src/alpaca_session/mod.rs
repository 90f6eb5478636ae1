//! The AlpacaSession: one per Alpaca account — REST orders ([`rest`], [`orders`]), the
//! trade_updates stream ([`stream`]), status mapping ([`mapping`]) and start-up recovery.

mod actor;
pub mod config;
pub mod error;
pub mod mapping;
mod messages;
mod orders;
mod positions;
pub mod rest;
mod stream;

pub use actor::{AlpacaSession, AlpacaSessionArgs, AlpacaSessionState, find, name_for};
pub use config::{AlpacaAccountConfig, AlpacaConfig, Credentials};
pub use error::SessionError;
pub use messages::AlpacaSessionMessage;
pub use orders::prepare_submission;
pub use positions::PositionsSynced;

//! The Telegram side: teloxide bots, commands, authorisation, rendering.

pub mod render;

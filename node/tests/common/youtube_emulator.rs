//! The YouTube emulator is part of the product (`reelfleet emulate
//! youtube`); tests reach it through here.

pub use reelfleet::emulate::youtube::*;

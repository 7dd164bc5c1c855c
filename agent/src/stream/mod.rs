pub mod portforward_spdy;
pub mod spdy;

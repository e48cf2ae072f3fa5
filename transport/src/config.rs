//! Tunable knobs of the transport (timers, backoff, size limits) and their validation.

use std::time::Duration;

use thiserror::Error;

use crate::frame::MAX_PAYLOAD;

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("heartbeat interval {interval:?} must be shorter than the peer timeout {timeout:?}")]
    HeartbeatTooSlow {
        interval: Duration,
        timeout: Duration,
    },
    #[error("backoff minimum {min:?} exceeds its maximum {max:?}")]
    Backoff { min: Duration, max: Duration },
    #[error("max payload {0} is outside 1..={MAX_PAYLOAD}")]
    MaxPayload(usize),
}

/// Timers and limits of the transport. `Config::default()` suits a LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A heartbeat is sent when nothing else was sent for this long (default 500 ms).
    pub heartbeat_interval: Duration,
    /// A peer from which nothing arrived for this long is declared lost (default 3 s).
    pub peer_timeout: Duration,
    /// Connect + Noise handshake + Hello must finish within this (default 3 s).
    pub handshake_timeout: Duration,
    /// First reconnection delay after a failure or loss (default 100 ms); doubles per try.
    pub backoff_min: Duration,
    /// Cap of the reconnection delay (default 5 s).
    pub backoff_max: Duration,
    /// Largest payload sent or accepted (default and hard cap [`MAX_PAYLOAD`] = 65503).
    pub max_payload: usize,
    /// Bytes queued for a slow peer before its connection is dropped (default 16 MiB).
    pub max_send_buffer: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            heartbeat_interval: Duration::from_millis(500),
            peer_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_payload: MAX_PAYLOAD,
            max_send_buffer: 16 << 20,
        }
    }
}

impl Config {
    /// Checks that the knobs are consistent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("peer_timeout", self.peer_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("backoff_min", self.backoff_min),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::Zero(name));
        }
        if self.max_send_buffer == 0 {
            return Err(ConfigError::Zero("max_send_buffer"));
        }
        if self.heartbeat_interval >= self.peer_timeout {
            return Err(ConfigError::HeartbeatTooSlow {
                interval: self.heartbeat_interval,
                timeout: self.peer_timeout,
            });
        }
        if self.backoff_min > self.backoff_max {
            return Err(ConfigError::Backoff {
                min: self.backoff_min,
                max: self.backoff_max,
            });
        }
        if !(1..=MAX_PAYLOAD).contains(&self.max_payload) {
            return Err(ConfigError::MaxPayload(self.max_payload));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn invalid_configs() {
        let ms = Duration::from_millis;
        let d = Config::default;
        let bad = [
            Config {
                heartbeat_interval: ms(0),
                ..d()
            },
            Config {
                heartbeat_interval: ms(3000),
                ..d()
            },
            Config {
                backoff_min: ms(6000),
                ..d()
            },
            Config {
                max_payload: MAX_PAYLOAD + 1,
                ..d()
            },
            Config {
                max_payload: 0,
                ..d()
            },
            Config {
                max_send_buffer: 0,
                ..d()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}

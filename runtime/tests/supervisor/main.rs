//! Supervisor tests: OTP's own supervisor suite, ported case by case.

mod fixtures;
mod intensity;
mod otp_suite;
mod otp_suite_strategies;

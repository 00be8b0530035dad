//! Example applications of troupe. Each is a binary in `src/bin/`:
//!
//! * `supervised-binary`: a real program (`python3 -m http.server`) wrapped as a process
//!   actor under an OTP supervisor; the example kills it and watches it come back.

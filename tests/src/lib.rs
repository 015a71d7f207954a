//! corekv-tests: end-to-end tests that start real `corekv-server` processes on loopback
//! through the shared launcher in `corekv-tools`. They arrive with the server binary.

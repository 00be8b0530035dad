//! Tests of the DRF sorter.

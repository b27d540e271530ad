//! The QUIC decision service end to end (real quinn endpoints on loopback).

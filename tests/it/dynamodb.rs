//! DynamoDB source end to end (moto server on loopback).

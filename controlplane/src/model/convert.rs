//! Conversions between model types and pss.v1 protobuf types.

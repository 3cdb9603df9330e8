//! Traffic counters and rates of a service or destination
//! (`IPVS_SVC_ATTR_STATS{,64}`, `IPVS_DEST_ATTR_STATS{,64}`).
//!
//! The kernel sends both nests: `STATS` with 32-bit counters (the byte counters
//! are 64-bit even there) for old tools, and `STATS64` with every value 64-bit.
//! [`Stats`] prefers `STATS64`.

use serde::Serialize;

use super::nla::{Attr, RawAttribute, Writer, parse};
use crate::error::Result;

mod kind {
    pub const CONNS: u16 = 1;
    pub const INPKTS: u16 = 2;
    pub const OUTPKTS: u16 = 3;
    pub const INBYTES: u16 = 4;
    pub const OUTBYTES: u16 = 5;
    pub const CPS: u16 = 6;
    pub const INPPS: u16 = 7;
    pub const OUTPPS: u16 = 8;
    pub const INBPS: u16 = 9;
    pub const OUTBPS: u16 = 10;
}

/// One attribute of a stats nest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsAttribute {
    /// Connections scheduled.
    Connections(u64),
    InPackets(u64),
    OutPackets(u64),
    InBytes(u64),
    OutBytes(u64),
    /// Current rates (per second), estimated by the kernel every 2 s.
    ConnectionRate(u64),
    InPacketRate(u64),
    OutPacketRate(u64),
    InByteRate(u64),
    OutByteRate(u64),
    /// `IPVS_STATS_ATTR_PAD` and anything newer.
    Other(RawAttribute),
}

/// Which nest the attributes sit in: the widths differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    /// `*_ATTR_STATS`: 32-bit except the byte counters.
    Legacy,
    /// `*_ATTR_STATS64`: all 64-bit.
    Wide,
}

impl StatsAttribute {
    pub(crate) fn parse_nest(payload: &[u8]) -> Result<Vec<Self>> {
        parse(payload, "IPVS stats")?
            .iter()
            .map(Self::parse_one)
            .collect()
    }

    fn parse_one(attr: &Attr<'_>) -> Result<Self> {
        const WHAT: &str = "IPVS stats";
        // Either width is accepted in either nest; the value is what matters.
        let value = || match attr.payload.len() {
            4 => attr.u32(WHAT).map(u64::from),
            _ => attr.u64(WHAT),
        };
        Ok(match attr.kind {
            kind::CONNS => Self::Connections(value()?),
            kind::INPKTS => Self::InPackets(value()?),
            kind::OUTPKTS => Self::OutPackets(value()?),
            kind::INBYTES => Self::InBytes(value()?),
            kind::OUTBYTES => Self::OutBytes(value()?),
            kind::CPS => Self::ConnectionRate(value()?),
            kind::INPPS => Self::InPacketRate(value()?),
            kind::OUTPPS => Self::OutPacketRate(value()?),
            kind::INBPS => Self::InByteRate(value()?),
            kind::OUTBPS => Self::OutByteRate(value()?),
            _ => Self::Other(attr.raw()),
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>, width: Width) {
        let (kind, value, always_wide) = match self {
            Self::Connections(v) => (kind::CONNS, *v, false),
            Self::InPackets(v) => (kind::INPKTS, *v, false),
            Self::OutPackets(v) => (kind::OUTPKTS, *v, false),
            Self::InBytes(v) => (kind::INBYTES, *v, true),
            Self::OutBytes(v) => (kind::OUTBYTES, *v, true),
            Self::ConnectionRate(v) => (kind::CPS, *v, false),
            Self::InPacketRate(v) => (kind::INPPS, *v, false),
            Self::OutPacketRate(v) => (kind::OUTPPS, *v, false),
            Self::InByteRate(v) => (kind::INBPS, *v, false),
            Self::OutByteRate(v) => (kind::OUTBPS, *v, false),
            Self::Other(raw) => return w.raw(raw),
        };
        if always_wide || width == Width::Wide {
            w.u64(kind, value);
        } else {
            // The legacy nest carries the low 32 bits, as the kernel does.
            w.u32(kind, value as u32);
        }
    }
}

/// Counters since the service or destination was added (or last zeroed) and the
/// current rates.
///
/// The kernel folds its per-CPU counters into what it reports on the rate
/// estimator's 2-second tick, so the counts lag the traffic by up to 2 s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub connections: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    /// Connections per second.
    pub connection_rate: u64,
    pub in_packet_rate: u64,
    pub out_packet_rate: u64,
    /// Bytes per second.
    pub in_byte_rate: u64,
    pub out_byte_rate: u64,
}

impl Stats {
    pub(crate) fn from_attributes(attrs: &[StatsAttribute]) -> Self {
        let mut stats = Stats::default();
        for attr in attrs {
            match *attr {
                StatsAttribute::Connections(v) => stats.connections = v,
                StatsAttribute::InPackets(v) => stats.in_packets = v,
                StatsAttribute::OutPackets(v) => stats.out_packets = v,
                StatsAttribute::InBytes(v) => stats.in_bytes = v,
                StatsAttribute::OutBytes(v) => stats.out_bytes = v,
                StatsAttribute::ConnectionRate(v) => stats.connection_rate = v,
                StatsAttribute::InPacketRate(v) => stats.in_packet_rate = v,
                StatsAttribute::OutPacketRate(v) => stats.out_packet_rate = v,
                StatsAttribute::InByteRate(v) => stats.in_byte_rate = v,
                StatsAttribute::OutByteRate(v) => stats.out_byte_rate = v,
                StatsAttribute::Other(_) => {}
            }
        }
        stats
    }

    /// `STATS64` when present, else the legacy nest, else zeros.
    pub(crate) fn pick(legacy: Option<&[StatsAttribute]>, wide: Option<&[StatsAttribute]>) -> Self {
        wide.or(legacy)
            .map(Self::from_attributes)
            .unwrap_or_default()
    }
}

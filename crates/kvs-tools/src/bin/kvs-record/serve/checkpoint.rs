// SPDX-License-Identifier: MPL-2.0
//! A call's checkpoint: the pieces stored so far, the mixer's state and
//! where to read the stream again, so that another worker can go on with
//! the call exactly. Both backends store it as these bytes.

use serde_json::{Value, json};

use super::mix::Mixer;
pub use crate::event::Resume;

/// Object metadata of a finished recording.
pub struct Meta {
    pub contact_id: String,
    pub tracks: String,
}

/// What a restarted worker needs to go on with a call.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Bytes of each stored piece, in order.
    pub pieces: Vec<u64>,
    pub resume: Resume,
    pub mixer: Mixer,
}

impl Checkpoint {
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let (state, samples) = self.mixer.save();
        let head = json!({
            "version": 1,
            "pieces": self.pieces,
            "resume": {"token": self.resume.token, "producer_ms": self.resume.producer_ms},
            "mixer": state,
        });
        let mut out = head.to_string().into_bytes();
        out.push(b'\n');
        out.extend(samples);
        out
    }

    pub(super) fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no header line")?;
        let head: Value = serde_json::from_slice(&bytes[..nl]).map_err(|e| e.to_string())?;
        if head["version"] != 1 {
            return Err(format!("version {} is not known", head["version"]));
        }
        let pieces = head["pieces"]
            .as_array()
            .ok_or("no pieces")?
            .iter()
            .map(|p| p.as_u64().ok_or("a piece without a size"))
            .collect::<Result<_, _>>()?;
        Ok(Checkpoint {
            pieces,
            resume: Resume {
                token: head["resume"]["token"].as_str().map(String::from),
                producer_ms: head["resume"]["producer_ms"].as_u64(),
            },
            mixer: Mixer::load(&head["mixer"], &bytes[nl + 1..])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip() {
        let mut mixer = Mixer::new(8000, 2);
        mixer.push(0, 1000, &[1, 0, 2, 0]);
        let cp = Checkpoint {
            pieces: vec![5 << 20, (5 << 20) + 4],
            resume: Resume {
                token: Some("91343852333181432392682062607743920146264245338".into()),
                producer_ms: Some(1_700_000_001_024),
            },
            mixer,
        };
        let back = Checkpoint::from_bytes(&cp.to_bytes()).unwrap();
        assert_eq!(back.pieces, cp.pieces);
        assert_eq!(back.resume, cp.resume);
        assert_eq!(back.mixer, cp.mixer);
        assert!(Checkpoint::from_bytes(b"{\"version\": 2}\n").is_err());
        let mut short = cp.to_bytes();
        short.pop();
        assert!(Checkpoint::from_bytes(&short).is_err());
    }
}

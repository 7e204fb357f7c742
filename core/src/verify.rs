//! The verify stage: every signature and structural rule a request must pass before the core sees
//! it. [`Verified`] can only be built here, so `Core::handle` cannot be handed an unchecked request.
//!
//! Checks that need only the committee live here (instance, indices, limits, parent stake,
//! signatures); checks that need the core's state (parents present, vote rule, gc) live in the core.
//! Signatures of one request are verified as one batch split over the rayon pool; certificates
//! already in the [`VerifiedCache`] (same digest, same signatures) cost one hash.
//!
//! A header with a bad signature or shape is dropped from a `HeaderBundle` and reported, so one
//! Byzantine author cannot make an honest driver's bundle fail at every core; a bad certificate
//! fails the whole request (only a Byzantine driver sends one).
//!
//! The verdicts already reached (certificates and single signatures) are kept in [`cache`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::checkpoint::{checkpoint_message, CheckpointCert};
use crate::committee::Committee;
use crate::crypto::{verify_batch, SignatureItem};
use crate::error::{CoreError, Malformation};
use crate::limits::MAX_PAYLOAD_BYTES;
use crate::messages::{vote_message, Certificate, Header, SignedHeader, Vote};
use crate::protocol::{Request, RequestBody};
use crate::types::{Digest, Round};

mod cache;

pub use cache::VerifiedCache;
use cache::{cache_key, SignatureKey};

/// A value that passed the verifier. Only this module can build one.
#[derive(Clone, Debug)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    /// The checked value.
    pub fn inner(&self) -> &T {
        &self.0
    }
    /// Unwraps the checked value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A verified request: headers that failed were removed and are listed in `rejected`.
#[derive(Clone, Debug)]
pub struct CheckedRequest {
    /// The request, holding only valid headers.
    pub request: Request,
    /// Headers dropped from a `HeaderBundle`, and why.
    pub rejected: Vec<(Digest, CoreError)>,
}

/// Signature verdicts decided ahead of time, by (key, signature, vote message).
type Verdicts = HashMap<SignatureKey, bool>;

/// Settings of the verify stage.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// Signatures per batch (one batch per rayon task).
    pub batch_size: usize,
    /// Certificate digests remembered.
    pub cache_capacity: usize,
}

impl Default for VerifierConfig {
    fn default() -> VerifierConfig {
        VerifierConfig {
            batch_size: 64,
            cache_capacity: 100_000,
        }
    }
}

/// How a batch of signatures is decided: one verdict per item, in order, checking at most
/// `chunk_size` items per rayon task. The protocol's check is [`verify_batch`] (ed25519 with
/// ZIP-215 rules); the seam exists so that the negative controls of `sleepyseal-sim` can plant a
/// check that accepts everything and show that the simulator's checkers catch it. Nothing in the
/// node binary installs another check.
pub type SignatureCheck = fn(items: &[SignatureItem<'_>], chunk_size: usize) -> Vec<bool>;

/// How a checkpoint certificate's shape is judged (signers of stake ≥ V, PROTOCOL.md §8a.2).
/// The protocol's rule is [`CheckpointCert::check`]; the seam exists so that a negative control
/// of `sleepyseal-sim` can accept certificates below V and show that the checkers catch it.
/// Nothing in the node binary installs another rule.
pub type CheckpointRule = fn(cert: &CheckpointCert, committee: &Committee) -> bool;

/// The protocol's [`CheckpointRule`].
fn checkpoint_rule(cert: &CheckpointCert, committee: &Committee) -> bool {
    cert.check(committee).is_ok()
}

/// Checks requests against the committee.
#[derive(Debug)]
pub struct Verifier {
    committee: Arc<Committee>,
    cache: Arc<VerifiedCache>,
    config: VerifierConfig,
    /// Decides the signatures not already known ([`verify_batch`] unless a negative control
    /// replaced it).
    signature_check: SignatureCheck,
    /// Judges checkpoint certificates' shape ([`CheckpointCert::check`] unless a negative
    /// control replaced it).
    checkpoint_rule: CheckpointRule,
}

impl Verifier {
    /// A verifier for `committee`.
    pub fn new(committee: Arc<Committee>, config: VerifierConfig) -> Verifier {
        Verifier {
            cache: Arc::new(VerifiedCache::new(config.cache_capacity)),
            committee,
            config,
            signature_check: verify_batch,
            checkpoint_rule,
        }
    }

    /// The same verifier deciding signatures with `check` instead of [`verify_batch`] (negative
    /// controls only; see [`SignatureCheck`]).
    pub fn with_signature_check(mut self, check: SignatureCheck) -> Verifier {
        self.signature_check = check;
        self
    }

    /// The same verifier judging checkpoint certificates by `rule` (negative controls only; see
    /// [`CheckpointRule`]).
    pub fn with_checkpoint_rule(mut self, rule: CheckpointRule) -> Verifier {
        self.checkpoint_rule = rule;
        self
    }

    /// The shared cache (the core prunes it as gc advances).
    pub fn cache(&self) -> &Arc<VerifiedCache> {
        &self.cache
    }

    /// The committee.
    pub fn committee(&self) -> &Arc<Committee> {
        &self.committee
    }

    /// Its settings.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// An upper bound on the signatures verifying `request` checks: its headers' and its
    /// certificates' (those cached cost nothing, and are counted anyway).
    pub fn signatures_in(&self, request: &Request) -> usize {
        let signers = |cs: &[Certificate]| cs.iter().map(|c| c.signatures.len()).sum::<usize>();
        match &request.body {
            RequestBody::HeaderBundle {
                headers, parents, ..
            } => headers.len() + signers(parents),
            RequestBody::CertBundle {
                certificates,
                parents,
                ..
            } => signers(certificates) + signers(parents),
            RequestBody::Sync { certificates, .. } => signers(certificates),
            RequestBody::InstallCheckpoint { certificate } => certificate.signatures.len(),
            _ => 0,
        }
    }

    /// Verifies a request. An error refuses the whole request.
    pub fn verify(&self, request: Request) -> Result<Verified<CheckedRequest>, CoreError> {
        self.verify_with(request, &Verdicts::new())
    }

    /// Verifies several requests (say, all that arrived while the previous batch was checked) with
    /// one batch verification over every signature they carry, then each request alone against
    /// those verdicts. One result per request, in order; each is what [`Verifier::verify`] would
    /// give.
    pub fn verify_many(
        &self,
        requests: Vec<Request>,
    ) -> Vec<Result<Verified<CheckedRequest>, CoreError>> {
        let mut messages: Vec<(SignatureKey, Round)> = Vec::new();
        for request in requests
            .iter()
            .filter(|r| r.instance == self.committee.instance())
        {
            match &request.body {
                RequestBody::HeaderBundle {
                    round,
                    headers,
                    parents,
                    ..
                } => {
                    for h in headers.iter().filter(|h| {
                        h.header.round() == *round && self.check_header_shape(&h.header).is_ok()
                    }) {
                        messages.push((
                            (
                                self.public_key(h.header.author()),
                                h.signature,
                                vote_message(&self.committee.instance(), &h.header.digest()),
                            ),
                            h.header.round(),
                        ));
                    }
                    self.collect_certificate_items(parents, &mut messages);
                }
                RequestBody::CertBundle {
                    certificates,
                    parents,
                    ..
                } => {
                    self.collect_certificate_items(certificates, &mut messages);
                    self.collect_certificate_items(parents, &mut messages);
                }
                RequestBody::Sync { certificates, .. } => {
                    self.collect_certificate_items(certificates, &mut messages);
                }
                _ => {}
            }
        }
        let items: Vec<SignatureItem<'_>> = messages
            .iter()
            .map(|((public_key, signature, message), _)| SignatureItem {
                public_key: *public_key,
                message,
                signature: *signature,
            })
            .collect();
        let rounds: Vec<Round> = messages.iter().map(|(_, round)| *round).collect();
        let verdicts: Verdicts = self
            .verify_items(&items, &rounds, &Verdicts::new())
            .into_iter()
            .zip(&messages)
            .map(|(ok, (key, _))| (*key, ok))
            .collect();
        requests
            .into_iter()
            .map(|r| self.verify_with(r, &verdicts))
            .collect()
    }

    /// The signatures of `certificates` that [`Verifier::check_certificates`] would check.
    fn collect_certificate_items(
        &self,
        certificates: &[Certificate],
        out: &mut Vec<(SignatureKey, Round)>,
    ) {
        for c in certificates {
            if !matches!(self.check_certificate_shape(c), Ok(false))
                || self.cache.contains(&cache_key(c))
            {
                continue;
            }
            let message = vote_message(&self.committee.instance(), &c.digest());
            for (signer, signature) in c.signers.iter().zip(&c.signatures) {
                out.push(((self.public_key(*signer), *signature, message), c.round()));
            }
        }
    }

    fn verify_with(
        &self,
        request: Request,
        known: &Verdicts,
    ) -> Result<Verified<CheckedRequest>, CoreError> {
        if request.instance != self.committee.instance() {
            return Err(CoreError::WrongInstance {
                got: request.instance,
            });
        }
        let Request { instance, body } = request;
        let mut rejected = Vec::new();
        let body = match body {
            RequestBody::HeaderBundle {
                round,
                headers,
                parents,
                payloads,
            } => {
                let headers = self.check_headers(round, headers, &mut rejected, known);
                self.check_certificates_with(&parents, None, known)?;
                RequestBody::HeaderBundle {
                    round,
                    headers,
                    parents,
                    payloads,
                }
            }
            RequestBody::CertBundle {
                round,
                certificates,
                parents,
                payloads,
            } => {
                self.check_certificates_with(&certificates, Some(round), known)?;
                self.check_certificates_with(&parents, None, known)?;
                RequestBody::CertBundle {
                    round,
                    certificates,
                    parents,
                    payloads,
                }
            }
            RequestBody::Sync {
                certificates,
                payloads,
            } => {
                self.check_certificates_with(&certificates, None, known)?;
                RequestBody::Sync {
                    certificates,
                    payloads,
                }
            }
            RequestBody::InstallCheckpoint { certificate } => {
                self.check_checkpoint(&certificate)?;
                RequestBody::InstallCheckpoint { certificate }
            }
            RequestBody::Fetch { ref after, .. } if after.len() != self.committee.size() => {
                return Err(CoreError::TooMany {
                    what: "fetch bounds",
                    len: after.len() as u64,
                    max: self.committee.size() as u64,
                })
            }
            other => other,
        };
        Ok(Verified(CheckedRequest {
            request: Request { instance, body },
            rejected,
        }))
    }

    /// A checkpoint certificate (PROTOCOL.md §8a.2): its shape (the instance, one round per
    /// author, distinct known signers of stake ≥ V), then every signature, decided as votes are.
    pub fn check_checkpoint(&self, cert: &CheckpointCert) -> Result<(), CoreError> {
        if !(self.checkpoint_rule)(cert, &self.committee) {
            return Err(CoreError::InvalidCheckpoint);
        }
        let digest = cert.state.digest();
        let message = checkpoint_message(&self.committee.instance(), &digest);
        let items: Vec<SignatureItem<'_>> = cert
            .signers
            .iter()
            .zip(&cert.signatures)
            .map(|(signer, signature)| SignatureItem {
                public_key: self.public_key(*signer),
                message: &message,
                signature: *signature,
            })
            .collect();
        let verdicts = (self.signature_check)(&items, self.config.batch_size);
        assert_eq!(verdicts.len(), items.len(), "one verdict per signature");
        match verdicts.iter().position(|ok| !ok) {
            Some(i) => Err(CoreError::BadSignature {
                digest,
                signer: cert.signers[i],
            }),
            None => Ok(()),
        }
    }

    /// Structure of a header of round ≥ 1 (everything but parent presence, which needs the DAG).
    pub fn check_header_shape(&self, header: &Header) -> Result<(), CoreError> {
        let malformed = |reason| CoreError::Malformed {
            digest: header.digest(),
            reason,
        };
        if header.instance() != self.committee.instance() {
            return Err(CoreError::WrongInstance {
                got: header.instance(),
            });
        }
        if !self.committee.contains(header.author()) {
            return Err(CoreError::UnknownAuthority(header.author()));
        }
        if header.round() == Round::GENESIS {
            return Err(malformed(Malformation::GenesisRound));
        }
        if header.payload().len as usize > MAX_PAYLOAD_BYTES {
            return Err(malformed(Malformation::PayloadTooLarge));
        }
        let parent_stake = self
            .committee
            .stake_of(header.parents().iter().map(|p| p.author))
            .map_err(|_| malformed(Malformation::UnknownParentAuthor))?;
        if parent_stake < self.committee.quorum_threshold() {
            return Err(malformed(Malformation::ParentsBelowQuorum));
        }
        Ok(())
    }

    fn check_headers(
        &self,
        round: Round,
        headers: Vec<SignedHeader>,
        rejected: &mut Vec<(Digest, CoreError)>,
        known: &Verdicts,
    ) -> Vec<SignedHeader> {
        let mut shaped = Vec::with_capacity(headers.len());
        for h in headers {
            let digest = h.header.digest();
            let shape = if h.header.round() != round {
                Err(CoreError::Malformed {
                    digest,
                    reason: Malformation::BundleRound,
                })
            } else {
                self.check_header_shape(&h.header)
            };
            match shape {
                Ok(()) => shaped.push(h),
                Err(e) => rejected.push((digest, e)),
            }
        }
        let messages: Vec<[u8; 76]> = shaped
            .iter()
            .map(|h| vote_message(&self.committee.instance(), &h.header.digest()))
            .collect();
        let items: Vec<SignatureItem<'_>> = shaped
            .iter()
            .zip(&messages)
            .map(|(h, m)| SignatureItem {
                public_key: self.public_key(h.header.author()),
                message: m,
                signature: h.signature,
            })
            .collect();
        let rounds: Vec<Round> = shaped.iter().map(|h| h.header.round()).collect();
        let verdicts = self.verify_items(&items, &rounds, known);
        let mut valid = Vec::with_capacity(shaped.len());
        for (h, ok) in shaped.into_iter().zip(verdicts) {
            if ok {
                valid.push(h);
            } else {
                rejected.push((
                    h.header.digest(),
                    CoreError::BadSignature {
                        digest: h.header.digest(),
                        signer: h.header.author(),
                    },
                ));
            }
        }
        valid
    }

    /// Checks certificates; with `round`, each must be of that round.
    pub fn check_certificates(
        &self,
        certificates: &[Certificate],
        round: Option<Round>,
    ) -> Result<(), CoreError> {
        self.check_certificates_with(certificates, round, &Verdicts::new())
    }

    fn check_certificates_with(
        &self,
        certificates: &[Certificate],
        round: Option<Round>,
        known: &Verdicts,
    ) -> Result<(), CoreError> {
        // One entry per signature to check: (certificate, signer position).
        let mut pending: Vec<(&Certificate, usize, [u8; 76])> = Vec::new();
        for c in certificates {
            if round.is_some_and(|r| r != c.round()) {
                return Err(CoreError::Malformed {
                    digest: c.digest(),
                    reason: Malformation::BundleRound,
                });
            }
            if self.check_certificate_shape(c)? || self.cache.contains(&cache_key(c)) {
                continue;
            }
            let message = vote_message(&self.committee.instance(), &c.digest());
            pending.extend((0..c.signers.len()).map(|i| (c, i, message)));
        }
        let items: Vec<SignatureItem<'_>> = pending
            .iter()
            .map(|(c, i, message)| SignatureItem {
                public_key: self.public_key(c.signers[*i]),
                message,
                signature: c.signatures[*i],
            })
            .collect();
        let rounds: Vec<Round> = pending.iter().map(|(c, _, _)| c.round()).collect();
        let verdicts = self.verify_items(&items, &rounds, known);
        if let Some(((c, i, _), _)) = pending.iter().zip(&verdicts).find(|(_, ok)| !**ok) {
            return Err(CoreError::BadSignature {
                digest: c.digest(),
                signer: c.signers[*i],
            });
        }
        for c in certificates.iter().filter(|c| c.round() > Round::GENESIS) {
            self.cache.insert(cache_key(c), c.round());
        }
        Ok(())
    }

    /// Structural checks of a certificate. Returns `true` for a genuine genesis certificate
    /// (which carries no signatures).
    fn check_certificate_shape(&self, c: &Certificate) -> Result<bool, CoreError> {
        let malformed = |reason| CoreError::Malformed {
            digest: c.digest(),
            reason,
        };
        if c.round() == Round::GENESIS {
            let genuine = self.committee.contains(c.author())
                && *c == Certificate::genesis(self.committee.instance(), c.author());
            return if genuine {
                Ok(true)
            } else {
                Err(malformed(Malformation::FakeGenesis))
            };
        }
        self.check_header_shape(&c.header)?;
        if c.signers.len() != c.signatures.len() {
            return Err(malformed(Malformation::SignatureCount));
        }
        if c.signers.binary_search(&c.author()).is_err() {
            return Err(malformed(Malformation::AuthorNotSigner));
        }
        let stake = self
            .committee
            .stake_of(c.signers.iter().copied())
            .map_err(|_| malformed(Malformation::UnknownSigner))?;
        if stake < self.committee.quorum_threshold() {
            return Err(malformed(Malformation::SignersBelowQuorum));
        }
        Ok(false)
    }

    fn public_key(&self, index: crate::types::AuthorityIndex) -> crate::crypto::PublicKey {
        self.committee
            .authority(index)
            .expect("index checked against the committee")
            .public_key
    }

    /// Records the votes this core cast on headers of `round`: they verify by construction, and
    /// each is a signature of the certificates those headers become.
    pub fn remember_own_votes(&self, votes: &[Vote], round: Round) {
        let instance = self.committee.instance();
        self.cache.record_signatures(votes.iter().map(|v| {
            let message = vote_message(&instance, &v.header_digest);
            ((self.public_key(v.voter), v.signature, message), round)
        }));
    }

    /// One verdict per item (`rounds[i]`: the round of what item i signs): from `known` or the
    /// cache where it was decided already, the rest in one batch, whose valid verdicts are cached.
    fn verify_items(
        &self,
        items: &[SignatureItem<'_>],
        rounds: &[Round],
        known: &Verdicts,
    ) -> Vec<bool> {
        assert_eq!(items.len(), rounds.len(), "one round per signature");
        let key = |i: &SignatureItem<'_>| -> Option<SignatureKey> {
            Some((i.public_key, i.signature, i.message.try_into().ok()?))
        };
        let mut verdicts: Vec<Option<bool>> = items
            .iter()
            .map(|i| {
                let key = key(i)?;
                known
                    .get(&key)
                    .copied()
                    .or_else(|| self.cache.signature_valid(&key).then_some(true))
            })
            .collect();
        let unknown: Vec<usize> = (0..items.len())
            .filter(|i| verdicts[*i].is_none())
            .collect();
        if !unknown.is_empty() {
            let batch: Vec<SignatureItem<'_>> = unknown.iter().map(|i| items[*i]).collect();
            let fresh = (self.signature_check)(&batch, self.config.batch_size);
            assert_eq!(fresh.len(), batch.len(), "one verdict per signature");
            for (i, ok) in unknown.iter().zip(&fresh) {
                verdicts[*i] = Some(*ok);
            }
            self.cache.record_signatures(
                unknown
                    .iter()
                    .zip(&fresh)
                    .filter(|(_, ok)| **ok)
                    .filter_map(|(i, _)| Some((key(&items[*i])?, rounds[*i]))),
            );
        }
        verdicts
            .into_iter()
            .map(|v| v.expect("every item decided"))
            .collect()
    }
}

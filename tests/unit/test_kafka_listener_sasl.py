"""SASL exchanges of the Kafka listener (shmlog/broker/kafka_listener/sasl.py) against RFC 7677's
known answer, and PLAIN against the same stored credential."""
import base64

import pytest

from shmlog.broker.kafka_listener import sasl

# RFC 7677 section 3: user "user", password "pencil"
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


@pytest.fixture
def credentials():
    return {"user": {"SCRAM-SHA-256": sasl.make_credential("SCRAM-SHA-256", "pencil", 4096, SALT)}}


def test_scram_sha_256_answers_rfc_7677s_exchange_and_names_the_user(credentials):
    scram = sasl.Scram("SCRAM-SHA-256", credentials, nonce_suffix=SERVER_NONCE)
    assert scram.step(CLIENT_FIRST) == SERVER_FIRST
    assert scram.step(CLIENT_FINAL) == SERVER_FINAL
    assert scram.user == "user"


def test_a_scram_proof_made_with_another_password_fails(credentials):
    scram = sasl.Scram("SCRAM-SHA-256", credentials, nonce_suffix=SERVER_NONCE)
    scram.step(CLIENT_FIRST)
    forged = CLIENT_FINAL[:-10] + b"AAAAAAAAA="
    with pytest.raises(sasl.AuthFailed):
        scram.step(forged)
    assert scram.user is None


def test_an_unknown_scram_user_fails_at_the_first_message(credentials):
    with pytest.raises(sasl.AuthFailed):
        sasl.Scram("SCRAM-SHA-256", credentials).step(b"n,,n=nobody,r=abc")


def test_plain_is_checked_against_the_stored_scram_credential(credentials):
    assert sasl.check_plain(credentials, b"\0user\0pencil") == "user"
    with pytest.raises(sasl.AuthFailed):
        sasl.check_plain(credentials, b"\0user\0pen")
    with pytest.raises(sasl.AuthFailed):
        sasl.check_plain(credentials, b"garbage")


def test_stored_credentials_hold_no_password_and_are_private(tmp_path):
    sasl.set_user(str(tmp_path), "alice", "alice-secret")
    path = sasl.credentials_path(str(tmp_path))
    assert "alice-secret" not in open(path).read()
    assert oct(__import__("os").stat(path).st_mode & 0o777) == "0o600"
    assert set(sasl.load(str(tmp_path))["alice"]) == {"SCRAM-SHA-256", "SCRAM-SHA-512"}

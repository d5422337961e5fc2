from signaling.config import Config
from signaling.ice import ice_servers, turn_credentials
from signaling.ids import UserId


def test_turn_credentials_match_a_fixed_vector() -> None:
    # Computed independently: printf '1700000600:alice' | openssl dgst -sha1 -hmac north -binary | base64
    assert turn_credentials("north", UserId("alice"), ttl=600, now=1_700_000_000) == (
        "1700000600:alice", "gthUwOpcRoLI0MMCziCEBOWYnpo=",
    )


def test_ice_servers_list_stun_then_turn_with_credentials() -> None:
    config = Config(stun_urls=("stun:127.0.0.1:3478",),
                    turn_urls=("turn:127.0.0.1:3478?transport=udp",), turn_secret="north",
                    turn_ttl=600)
    servers = ice_servers(config, UserId("alice"), now=1_700_000_000)
    assert servers == [
        {"urls": ["stun:127.0.0.1:3478"]},
        {"urls": ["turn:127.0.0.1:3478?transport=udp"], "username": "1700000600:alice",
         "credential": "gthUwOpcRoLI0MMCziCEBOWYnpo="},
    ]


def test_no_servers_configured_means_an_empty_list() -> None:
    assert ice_servers(Config(), UserId("alice")) == []

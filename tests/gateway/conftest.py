"""A gateway on loopback: a real relay, the gateway (sippy on UDP), and a DSIP agent."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from dsip.agent.calls import CallAgent
from dsip.core.gateway.b2bua import TrunkProfile
from dsip.core.identity import KeyPair
from dsip.core.trust.rcid import IssuerTrust
from dsip.services.gateway import Gateway, GatewayConfig
from dsip.services.gateway_sip import SipEndpointConfig
from dsip.services.gateway_stir import StirSigner, StirVerifier
from dsip.services.ports import free_port
from dsip.services.relay import Relay
from tests.relayfix import ClientFactory, relay_uri


@pytest.fixture
async def agent(connect: ClientFactory) -> AsyncIterator[CallAgent]:
    a = CallAgent(await connect())
    await a.start()
    yield a
    await a.close()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway_factory(
    relay: Relay, client_ssl: ssl.SSLContext, agent: CallAgent
) -> AsyncIterator[GatewayFactory]:
    made: list[Gateway] = []
    unset = object()

    async def make(
        *,
        default_route: object = unset,
        stir_signer: StirSigner | None = None,
        stir_verifier: StirVerifier | None = None,
        identity_assertable: bool = False,
        outbound_from: str = "dsip",
        outbound_user: str = "pstn",
        media_bridge: bool = False,
        rcid_trust: IssuerTrust | None = None,
        **sip: Any,
    ) -> Gateway:
        sip_cfg = SipEndpointConfig(host="127.0.0.1", port=free_port(udp=True, tcp=False), **sip)
        route = agent.client.identity if default_route is unset else default_route
        cfg = GatewayConfig(
            sip=sip_cfg,
            relay=relay_uri(relay),
            default_route=route,  # type: ignore[arg-type]
            trunk=TrunkProfile(identity_assertable=identity_assertable),
            outbound_from=outbound_from,
            outbound_user=outbound_user,
            media_bridge=media_bridge,
        )
        gw = Gateway(
            cfg,
            KeyPair.generate(),
            ssl_context=client_ssl,
            stir_signer=stir_signer,
            stir_verifier=stir_verifier,
            rcid_trust=rcid_trust,
        )
        await gw.start()
        made.append(gw)
        return gw

    yield make
    for gw in made:
        await gw.stop()

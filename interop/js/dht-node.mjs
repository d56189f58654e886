// A js-libp2p Kad-DHT node for dsip's interop tests (tests/dht/test_interop_js.py).
//
// Usage: node dht-node.mjs [--listen MULTIADDR] [--bootstrap MULTIADDR]...
//
// It speaks the same Kademlia protocol id as dsip's py-libp2p nodes (/ipfs/kad/1.0.0) and
// registers a validator and a selector for dsip's two record namespaces:
//
//   /dsip/<base64url(sha256("dsip-presence:" + DID))>            one presence record
//   /dsipg/<base64url(sha256("dsip-presence:geo:" + geohash))>   a region bucket
//
// This node CANNOT verify DSIP records: it has no DID resolution and no DSIP-JOSE pipeline.
// Its validator therefore only checks the shape (UTF-8 JSON object with exactly
// protected/payload/signature for a presence record, or a JSON object for a region bucket,
// at most 65,536 bytes) and accepts what it cannot verify. Its selector prefers the
// highest payload "seq" it can read. The dsip side never trusts a value because a js
// node stored or returned it: every reader re-verifies (see src/dsip/dht/bridge.py).
//
// Control protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
//   {"id": 1, "op": "put", "key": "/dsip/...", "value": "<base64>"}  -> {"id": 1, "ok": true}
//   {"id": 2, "op": "get", "key": "/dsip/..."}  -> {"id": 2, "ok": true, "values": ["<b64>"...]}
//   {"id": 3, "op": "connect", "addr": "/ip4/..."}  -> {"id": 3, "ok": true}
//   {"id": 4, "op": "stop"}
// The first line printed is {"event": "ready", "peerId": ..., "addrs": [...]}.

import './polyfills.mjs'
import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { kadDHT } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const MAX_VALUE = 65536
const PROTOCOL = '/ipfs/kad/1.0.0'

function parseArgs (argv) {
  const args = { listen: '/ip4/127.0.0.1/tcp/0', bootstrap: [] }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--listen') args.listen = argv[++i]
    else if (argv[i] === '--bootstrap') args.bootstrap.push(argv[++i])
    else throw new Error(`unknown argument ${argv[i]}`)
  }
  return args
}

function jsonObject (value) {
  if (value.byteLength > MAX_VALUE) throw new Error('value larger than 65,536 bytes')
  const text = new TextDecoder('utf-8', { fatal: true }).decode(value)
  const obj = JSON.parse(text)
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new Error('value is not a JSON object')
  }
  return obj
}

// Shape check only: the js side has no DSIP verifier (see the header comment).
function validatePresence (key, value) {
  const obj = jsonObject(value)
  const names = Object.keys(obj).sort().join(',')
  if (names !== 'payload,protected,signature') throw new Error('not a DSIP-JOSE envelope')
}

function validateRegion (key, value) {
  jsonObject(value)
}

function seqOf (value) {
  try {
    const env = jsonObject(value)
    const payload = JSON.parse(Buffer.from(env.payload, 'base64url').toString('utf-8'))
    return Number.isInteger(payload.seq) ? payload.seq : -1
  } catch {
    return -1
  }
}

function selectHighestSeq (key, records) {
  let best = 0
  for (let i = 1; i < records.length; i++) {
    if (seqOf(records[i]) > seqOf(records[best])) best = i
  }
  return best
}

const args = parseArgs(process.argv.slice(2))
const node = await createLibp2p({
  addresses: { listen: [args.listen] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({
      protocol: PROTOCOL,
      clientMode: false,
      allowQueryWithZeroPeers: true,
      // The default mapper drops private addresses; every test node is on loopback.
      peerInfoMapper: (peer) => peer,
      validators: { dsip: validatePresence, dsipg: validateRegion },
      selectors: { dsip: selectHighestSeq, dsipg: () => 0 }
    })
  }
})

function reply (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

async function connect (addr) {
  const ma = multiaddr(addr)
  await node.dial(ma, { signal: AbortSignal.timeout(10000) })
}

for (const addr of args.bootstrap) await connect(addr)

async function handle (cmd) {
  const key = cmd.key === undefined ? undefined : new TextEncoder().encode(cmd.key)
  const signal = AbortSignal.timeout(cmd.timeoutMs ?? 15000)
  switch (cmd.op) {
    case 'connect':
      await connect(cmd.addr)
      return {}
    case 'put': {
      const value = Buffer.from(cmd.value, 'base64')
      let stored = 0
      for await (const ev of node.services.dht.put(key, value, { signal })) {
        if (ev.name === 'PEER_RESPONSE' && ev.messageName === 'PUT_VALUE') stored++
      }
      return { stored }
    }
    case 'get': {
      // Every value any peer returned (plus our own), not only the selected one: the
      // dsip reader does its own §8.3 selection over all of them.
      const values = new Set()
      try {
        for await (const ev of node.services.dht.get(key, { signal })) {
          if (ev.name === 'VALUE') values.add(Buffer.from(ev.value).toString('base64'))
          if (ev.name === 'PEER_RESPONSE' && ev.record != null) {
            values.add(Buffer.from(ev.record.value).toString('base64'))
          }
        }
      } catch (err) {
        if (values.size === 0 && err.name !== 'NotFoundError') throw err
      }
      return { values: [...values] }
    }
    case 'peers': {
      const protocols = {}
      for (const p of node.getPeers()) {
        protocols[p.toString()] = (await node.peerStore.get(p)).protocols
      }
      return { peers: node.getPeers().map((p) => p.toString()), routingTable: node.services.dht.routingTable?.size, protocols }
    }
    case 'stop':
      await node.stop()
      reply({ id: cmd.id, ok: true })
      process.exit(0)
      break
    default:
      throw new Error(`unknown op ${cmd.op}`)
  }
}

reply({
  event: 'ready',
  peerId: node.peerId.toString(),
  addrs: node.getMultiaddrs().map((a) => a.toString())
})

const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (line.trim() === '') return
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    reply({ ok: false, error: `bad command: ${err.message}` })
    return
  }
  handle(cmd).then(
    (result) => reply({ id: cmd.id, ok: true, ...result }),
    (err) => reply({ id: cmd.id, ok: false, error: `${err.name}: ${err.message}` })
  )
})
lines.on('close', async () => {
  await node.stop()
  process.exit(0)
})

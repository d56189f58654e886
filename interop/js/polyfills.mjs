// Node 20 lacks Promise.withResolvers (Node >= 22), which current js-libp2p packages use.
// Imported first by dht-node.mjs so the polyfill is in place before libp2p loads.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new Promise((res, rej) => {
      resolve = res
      reject = rej
    })
    return { promise, resolve, reject }
  }
}

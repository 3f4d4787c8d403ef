// flashfeed's local DynamoDB server: dynalite (node_modules/dynalite, pinned in package.json),
// started by flashfeed/local/dynamodb.py as `node dynalite_server.js --host H --port P --path D`.
//
// It is dynalite's own server with one fix. dynalite 4.0.0 rethrows any error of a request
// stream, and Node raises one ("aborted", ECONNRESET) whenever a client goes away before its
// request has fully arrived: a load task killed in the middle of a batch write ended the whole
// server, and every later request was refused. Here that request is dropped and logged.
'use strict'

const dynalite = require('dynalite')

function option (name) {
  const at = process.argv.indexOf(`--${name}`)
  if (at < 0 || at + 1 >= process.argv.length) {
    console.error(`usage: node dynalite_server.js --host <address> --port <port> --path <data dir> (missing --${name})`)
    process.exit(2)
  }
  return process.argv[at + 1]
}

const host = option('host')
const port = Number(option('port'))
const server = dynalite({ path: option('path') })

// Runs right after dynalite's own request handler, which has just added the rethrowing listener.
server.on('request', function (req, res) {
  req.removeAllListeners('error')
  req.on('error', function (err) {
    console.error(`${new Date().toISOString()} a client went away before its request arrived ` +
      `(${err.code || err.message}, ${req.headers['x-amz-target'] || req.method}); request dropped`)
    res.destroy()
  })
})

server.listen(port, host, function () {
  console.log(`Dynalite listening at: http://${host}:${server.address().port}`)
})

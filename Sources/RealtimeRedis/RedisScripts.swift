import RedisClient

/// The engine's Lua scripts. Each runs atomically in Redis, which is what makes publish,
/// presence changes and the presence sweep safe with any number of nodes.
struct RedisScripts: Sendable {
    let publish: RedisScript
    let replay: RedisScript
    let enter: RedisScript
    let refresh: RedisScript
    let leave: RedisScript
    let sweep: RedisScript
    let members: RedisScript
    let createChannel: RedisScript
    let deleteChannel: RedisScript
    let changeEpoch: RedisScript

    /// Lua that sets `now` (ms) from `ARGV[n]`, or from Redis `TIME` when it is empty: presence
    /// expiry then runs on one clock for the whole cluster.
    static func now(fromArgument n: Int) -> String {
        """
        local now = tonumber(ARGV[\(n)])
          if not now then
            local t = redis.call('TIME')
            now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          end
        """
    }

    /// - Parameter sharded: on Redis Cluster events go out with `SPUBLISH` (sharded pub/sub, on
    ///   the channel's own shard); on one server or Sentinel with `PUBLISH`.
    init(sharded: Bool) {
        let pub = sharded ? "SPUBLISH" : "PUBLISH"
        /// KEYS: stream, idempotency key, meta. ARGV: event, data, client_id ('' = none), default
        /// maxlen, default ttl ms (the meta hash's `history_size` / `history_ttl_seconds` win when the
        /// channel was created with settings), idempotency window ms ('' = no key), pub/sub channel, now ms,
        /// a new epoch for a channel that has none (its meta hash is new, or was lost).
        /// Returns {1, id, first_use, replicated} for a new message or {0, original id, 0,
        /// replicated} for a duplicate; `replicated` is 1 when the channel's durability asks the
        /// caller to `WAIT` for a replica before acknowledging.
        ///
        /// Seven Redis calls on the common path (one `HMGET` reads every meta field it needs and
        /// one `HSET` writes them back): each call inside a script costs Redis about a
        /// microsecond on top of its own work.
        publish = RedisScript(
            """
            local stored = redis.call('HMGET', KEYS[3], 'history_size', 'history_ttl_seconds', 'durability', 'first_used', 'epoch', 'last_id')
            local replicated = 0
            if stored[3] == 'replicated' then replicated = 1 end
            if ARGV[6] ~= '' then
              local prev = redis.call('GET', KEYS[2])
              if prev then return {0, prev, 0, replicated} end
            end
            local maxlen = math.max((stored[1] and tonumber(stored[1])) or tonumber(ARGV[4]), 0)
            local ttl = ARGV[5]
            if stored[2] and tonumber(stored[2]) then ttl = math.max(tonumber(stored[2]), 1) * 1000 end
            local fields = {}
            local length = redis.call('XLEN', KEYS[1])
            if length == 0 then
              if stored[6] then fields = {'trimmed_id', stored[6]} end
            elseif length + 1 > maxlen then
              local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', length + 1 - maxlen)
              if #gone > 0 then fields = {'trimmed_id', gone[#gone][1]} end
            end
            local id
            if ARGV[3] ~= '' then
              id = redis.call('XADD', KEYS[1], 'MAXLEN', maxlen, '*', 'e', ARGV[1], 'd', ARGV[2], 'c', ARGV[3])
            else
              id = redis.call('XADD', KEYS[1], 'MAXLEN', maxlen, '*', 'e', ARGV[1], 'd', ARGV[2])
            end
            if maxlen == 0 then fields = {'trimmed_id', id} end
            redis.call('PEXPIRE', KEYS[1], ttl)
            local first = 0
            if not stored[4] then
              first = 1
              table.insert(fields, 'first_used')
              table.insert(fields, ARGV[8])
            end
            if not stored[5] then
              table.insert(fields, 'epoch')
              table.insert(fields, ARGV[9])
            end
            redis.call('HSET', KEYS[3], 'last_id', id, unpack(fields))
            redis.call('\(pub)', ARGV[7], 'm\\n' .. id .. '\\n' .. #ARGV[3] .. '\\n' .. ARGV[3] .. #ARGV[1] .. '\\n' .. ARGV[1] .. ARGV[2])
            if ARGV[6] ~= '' then redis.call('SET', KEYS[2], id, 'PX', ARGV[6]) end
            return {1, id, first, replicated}
            """)

        /// KEYS: stream, meta. ARGV: position, count. Returns {greatest id no longer retained, at
        /// most `count` entries after position, the epoch ('' before the first publish), the
        /// newest id the stream ever held, 1 when the stream holds the position itself}.
        replay = RedisScript(
            """
            local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
            local gone
            if redis.call('EXISTS', KEYS[1]) == 1 then
              gone = redis.call('HGET', KEYS[2], 'trimmed_id')
            else
              gone = redis.call('HGET', KEYS[2], 'last_id')
            end
            local epoch = redis.call('HGET', KEYS[2], 'epoch')
            local newest = redis.call('HGET', KEYS[2], 'last_id')
            local held = #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
            return {gone or '0-0', entries, epoch or '', newest or '0-0', held}
            """)

        /// KEYS: meta. ARGV: the epoch the caller saw, the new epoch, pub/sub channel. Changes the
        /// epoch only if it is still the one the caller saw (or missing), with an event; returns
        /// the epoch now.
        changeEpoch = RedisScript(
            """
            local current = redis.call('HGET', KEYS[1], 'epoch')
            if current and current ~= ARGV[1] then return current end
            redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
            redis.call('\(pub)', ARGV[3], 'e\\n' .. ARGV[2])
            return ARGV[2]
            """)

        /// KEYS: presence hash, expiry zset. ARGV: connection id, member JSON, ttl ms, pub/sub
        /// channel, now ms ('' = Redis TIME). Returns 1 when the member existed (an update), 0 for an enter.
        enter = RedisScript(
            """
            \(Self.now(fromArgument: 5))
            local existed = redis.call('HEXISTS', KEYS[1], ARGV[1])
            redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
            redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
            local action = 'enter'
            if existed == 1 then action = 'update' end
            redis.call('\(pub)', ARGV[4], 'p\\n' .. action .. '\\n' .. ARGV[2])
            return existed
            """)

        /// KEYS: presence hash, expiry zset. ARGV: ttl ms, pub/sub channel, now ms ('' = Redis
        /// TIME), then connection id and member JSON pairs. Extends each member still stored; enters
        /// again (with an enter event) each one swept meanwhile, and returns their connection ids.
        refresh = RedisScript(
            """
            \(Self.now(fromArgument: 3))
            local expiry = now + tonumber(ARGV[1])
            local entered = {}
            for i = 4, #ARGV, 2 do
              local conn = ARGV[i]
              if redis.call('HEXISTS', KEYS[1], conn) == 0 then
                redis.call('HSET', KEYS[1], conn, ARGV[i + 1])
                redis.call('\(pub)', ARGV[2], 'p\\nenter\\n' .. ARGV[i + 1])
                entered[#entered + 1] = conn
              end
              redis.call('ZADD', KEYS[2], expiry, conn)
            end
            return entered
            """)

        /// KEYS: presence hash, expiry zset. ARGV: connection id, pub/sub channel. Returns 1 when it left.
        leave = RedisScript(
            """
            local m = redis.call('HGET', KEYS[1], ARGV[1])
            if not m then return 0 end
            redis.call('HDEL', KEYS[1], ARGV[1])
            redis.call('ZREM', KEYS[2], ARGV[1])
            redis.call('\(pub)', ARGV[2], 'p\\nleave\\n' .. m)
            return 1
            """)

        /// KEYS: presence hash, expiry zset. ARGV: now ms ('' = Redis TIME), pub/sub channel. Removes
        /// expired members with one leave each (HDEL succeeds once, however many nodes sweep).
        /// Returns {removed, left}.
        sweep = RedisScript(
            """
            \(Self.now(fromArgument: 1))
            local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
            local n = 0
            for _, conn in ipairs(expired) do
              redis.call('ZREM', KEYS[2], conn)
              local m = redis.call('HGET', KEYS[1], conn)
              if m then
                redis.call('HDEL', KEYS[1], conn)
                redis.call('\(pub)', ARGV[2], 'p\\nleave\\n' .. m)
                n = n + 1
              end
            end
            return {n, redis.call('ZCARD', KEYS[2])}
            """)

        /// KEYS: presence hash, expiry zset. ARGV: now ms ('' = Redis TIME). Member JSON of live members.
        members = RedisScript(
            """
            \(Self.now(fromArgument: 1))
            local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')
            if #live == 0 then return {} end
            return redis.call('HMGET', KEYS[1], unpack(live))
            """)

        /// KEYS: meta. ARGV: type, history_size, history_ttl_seconds, created_at, durability.
        /// Returns {created (0/1), type, history_size, history_ttl_seconds, created_at, durability}.
        createChannel = RedisScript(
            """
            local existing = redis.call('HMGET', KEYS[1], 'type', 'history_size', 'history_ttl_seconds', 'created_at', 'durability')
            if existing[1] then return {0, existing[1], existing[2], existing[3], existing[4], existing[5] or 'primary'} end
            redis.call('HSET', KEYS[1], 'type', ARGV[1], 'history_size', ARGV[2], 'history_ttl_seconds', ARGV[3], 'created_at', ARGV[4], 'durability', ARGV[5])
            return {1, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]}
            """)

        /// KEYS: presence hash, expiry zset, stream, meta, subscriber counts. ARGV: pub/sub channel.
        /// Members leave (with events) first, then the data goes and nodes end subscriptions.
        deleteChannel = RedisScript(
            """
            local members = redis.call('HVALS', KEYS[1])
            for _, m in ipairs(members) do
              redis.call('\(pub)', ARGV[1], 'p\\nleave\\n' .. m)
            end
            redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
            redis.call('\(pub)', ARGV[1], 'd')
            return #members
            """)
    }
}

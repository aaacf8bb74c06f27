/// One vsock stream connection between a guest port and a host socket, and its credit
/// in both directions (5.10.6.3 "Flow Control").
///
/// Host → guest: the guest advertises `peerBufferAllocation` and how much of it it has
/// consumed (`peerForwardCount`); the device sends at most
/// `peerBufferAllocation - (sentToGuest - peerForwardCount)` more and reads nothing from
/// the host socket while that is 0, so the socket's own buffer holds the rest.
///
/// Guest → host: the device advertises `VsockLimits.bufferSize` and `forwardCount` (the
/// bytes it has written to the host socket). What the host socket does not take at once
/// waits in `pending`, which the guest's credit bounds to `bufferSize`; a guest that
/// sends past its credit has its connection reset.
struct VsockConnection {
    enum State: Equatable {
        /// Guest-initiated: waiting for the host side's connect to `PATH_port`.
        case connecting
        /// Host-initiated: the REQUEST is (or will be) on its way; waiting for RESPONSE
        /// until the deadline (monotonic nanoseconds).
        case requesting(deadline: UInt64)
        case established
        /// Both sides are done; waiting for the guest's RST until the deadline, after
        /// which the device resets the connection itself.
        case closing(deadline: UInt64)
    }

    /// Control packets owed to the guest (one of each at most: they are coalesced).
    struct Owed: OptionSet {
        let rawValue: UInt8
        static let request = Owed(rawValue: 1)
        static let response = Owed(rawValue: 2)
        static let creditUpdate = Owed(rawValue: 4)
        static let shutdown = Owed(rawValue: 8)
    }

    let id: UInt64
    /// The host side's port: the port the guest connected to, or the one the device
    /// chose for a host-initiated connection.
    let localPort: UInt32
    /// The guest side's port.
    let peerPort: UInt32
    /// The host socket (non-blocking), -1 while connecting.
    var fd: Int32 = -1
    var state: State

    var peerBufferAllocation: UInt32 = 0
    var peerForwardCount: UInt32 = 0
    /// Payload bytes sent to the guest.
    var sentToGuest: UInt32 = 0

    /// Payload bytes taken from the guest.
    var receivedFromGuest: UInt32 = 0
    /// Of those, the bytes the host socket has accepted.
    var forwardCount: UInt32 = 0
    /// The forward count the guest was last told (in any packet's header).
    var advertisedForwardCount: UInt32 = 0
    /// Guest bytes the host socket has not taken yet (from `pendingStart` on).
    var pending: [UInt8] = []
    var pendingStart = 0

    var owed: Owed = []
    /// SHUTDOWN flags the guest sent, and those the device sent (or owes) the guest.
    var guestShutdown: UInt32 = 0
    var hostShutdown: UInt32 = 0
    /// Edge-triggered readiness of the host socket: set by epoll, cleared at EAGAIN.
    var hostReadable = false
    var hostWritable = true
    /// The host socket reached end of stream, or its peer is gone altogether.
    var hostEOF = false
    var hostHungUp = false
    /// shutdown(SHUT_WR) was done on the host socket.
    var hostWriteClosed = false
    /// Whether the connection is in the device's list of connections with something
    /// for the guest.
    var queuedForGuest = false

    init(id: UInt64, localPort: UInt32, peerPort: UInt32, state: State) {
        self.id = id; self.localPort = localPort; self.peerPort = peerPort; self.state = state
    }

    /// Bytes the device may still send the guest.
    var peerCredit: UInt32 {
        let inFlight = sentToGuest &- peerForwardCount
        return inFlight >= peerBufferAllocation ? 0 : peerBufferAllocation - inFlight
    }

    /// Guest bytes waiting for the host socket.
    var pendingCount: Int { pending.count - pendingStart }

    /// Bytes the guest has sent that the device holds or has not yet acknowledged in
    /// its credit: what the guest believes is in flight.
    var guestInFlight: UInt32 { receivedFromGuest &- forwardCount }

    /// Whether the device has host data it could send the guest now.
    var wantsToSendData: Bool {
        state == .established && hostReadable && !hostEOF && peerCredit > 0
            && guestShutdown & VsockHeader.Shutdown.receive == 0
    }

    /// Whether anything is owed to the guest or could be sent.
    var hasWorkForGuest: Bool { !owed.isEmpty || wantsToSendData }

    /// Drops the first `count` pending bytes (the host took them), compacting the
    /// buffer once it is mostly consumed so it never grows past the credit.
    mutating func consumePending(_ count: Int) {
        pendingStart += count
        if pendingStart == pending.count {
            pending = []
            pendingStart = 0
        } else if pendingStart > pending.count / 2 {
            pending.removeFirst(pendingStart)
            pendingStart = 0
        }
    }
}

/// The bounds that keep a vsock device's host memory and work finite whatever the guest
/// and the host processes do.
public struct VsockLimits: Sendable, Equatable {
    /// The receive buffer the device advertises per connection (buf_alloc), which
    /// bounds the guest bytes it ever holds for one: 256 KiB, as Linux's default.
    public var bufferSize: UInt32 = 256 << 10
    /// Connections at once (host- and guest-initiated); more are refused. With
    /// `bufferSize` this bounds the device's buffers: 64 MiB at the defaults.
    public var maxConnections = 256
    /// Host connections still sending their `CONNECT` line.
    public var maxHandshakes = 64
    /// How long a host connection may take to send `CONNECT <port>\n`.
    public var handshakeTimeoutNanoseconds: UInt64 = 5_000_000_000
    /// How long the guest may take to answer a host-initiated REQUEST.
    public var requestTimeoutNanoseconds: UInt64 = 2_000_000_000
    /// How long a closing connection waits for the guest's RST (Linux's own close waits 8 s).
    public var closeTimeoutNanoseconds: UInt64 = 2_000_000_000
    /// The most payload in one packet to the guest.
    public var maxPacketPayload: UInt32 = 64 << 10

    public init() {}
}

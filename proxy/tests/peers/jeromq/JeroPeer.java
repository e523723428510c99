// One JeroMQ peer for the legacy-peer tests (test_jeromq.py), compiled at test time against
// Debian's libjeromq-java 0.3.6, which speaks ZMTP 2.0 only.
//
//   java -cp jeromq.jar:DIR JeroPeer MODE ENDPOINT COUNT [TOPIC]
//
// Modes: req (COUNT round trips, each reply checked), rep (answers COUNT requests), push (sends
// COUNT messages), pull (receives COUNT, checks their order), pub (publishes TOPIC|i until
// killed), sub (subscribes to TOPIC, receives COUNT, checks each carries it). Prints one line
// "ok MODE COUNT" and exits 0 when done; exits 1 with the reason on any timeout or mismatch.
// Every message of a multipart-capable mode is two frames, the second over 255 bytes, so the
// long frame form and MORE are exercised both ways.

import org.zeromq.ZMQ;

public class JeroPeer {
    static final int TIMEOUT_MS = 10000;
    static final byte[] LONG = new byte[300];

    static void fail(String why) {
        System.out.println("FAIL " + why);
        System.out.flush();
        System.exit(1);
    }

    static byte[] recv(ZMQ.Socket s, String what) {
        byte[] b = s.recv(0);
        if (b == null) {
            fail("timed out waiting for " + what);
        }
        return b;
    }

    static String str(byte[] b) {
        return new String(b, java.nio.charset.StandardCharsets.UTF_8);
    }

    /** The second frame of every message: 300 bytes, the long frame form. */
    static void expectLong(ZMQ.Socket s, String what) {
        if (!s.hasReceiveMore()) {
            fail(what + ": a one-frame message, expected two");
        }
        byte[] tail = recv(s, what + " (second frame)");
        if (tail.length != LONG.length || s.hasReceiveMore()) {
            fail(what + ": second frame of " + tail.length + " bytes");
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            fail("usage: JeroPeer MODE ENDPOINT COUNT [TOPIC]");
        }
        String mode = args[0];
        String endpoint = args[1];
        int count = Integer.parseInt(args[2]);
        String topic = args.length > 3 ? args[3] : "weather";
        java.util.Arrays.fill(LONG, (byte) 'L');
        ZMQ.Context ctx = ZMQ.context(1);
        int type;
        switch (mode) {
            case "req": type = ZMQ.REQ; break;
            case "rep": type = ZMQ.REP; break;
            case "push": type = ZMQ.PUSH; break;
            case "pull": type = ZMQ.PULL; break;
            case "pub": type = ZMQ.PUB; break;
            case "sub": type = ZMQ.SUB; break;
            default: fail("unknown mode " + mode); return;
        }
        ZMQ.Socket s = ctx.socket(type);
        s.setLinger(5000);
        s.setReceiveTimeOut(TIMEOUT_MS);
        s.setSendTimeOut(TIMEOUT_MS);
        if (type == ZMQ.SUB) {
            s.subscribe(topic.getBytes());
        }
        s.connect(endpoint);
        switch (mode) {
            case "req":
                for (int i = 0; i < count; i++) {
                    s.sendMore("req-" + i);
                    s.send(LONG, 0);
                    String r = str(recv(s, "reply " + i));
                    if (!r.equals("req-" + i + "-ok")) {
                        fail("request " + i + " answered with " + r);
                    }
                    expectLong(s, "reply " + i);
                }
                break;
            case "rep":
                for (int i = 0; i < count; i++) {
                    String q = str(recv(s, "request " + i));
                    expectLong(s, "request " + i);
                    s.sendMore(q + "-ok");
                    s.send(LONG, 0);
                }
                break;
            case "push":
                for (int i = 0; i < count; i++) {
                    s.sendMore("m-" + i);
                    s.send(LONG, 0);
                }
                break;
            case "pull":
                for (int i = 0; i < count; i++) {
                    String m = str(recv(s, "message " + i));
                    if (!m.equals("m-" + i)) {
                        fail("message " + i + " was " + m);
                    }
                    expectLong(s, "message " + i);
                }
                break;
            case "pub":
                for (int i = 0; ; i++) {
                    s.send(topic + "|" + i);
                    s.send("other|" + i);
                    Thread.sleep(2);
                }
            case "sub":
                for (int i = 0; i < count; i++) {
                    String m = str(recv(s, "publication " + i));
                    if (!m.startsWith(topic + "|")) {
                        fail("received " + m + " without subscribing to it");
                    }
                }
                break;
            default:
                break;
        }
        System.out.println("ok " + mode + " " + count);
        System.out.flush();
        s.close();
        ctx.term();
    }
}

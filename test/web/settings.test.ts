/**
 * The web client's settings and the subprotocol form of WebSocket auth, as pure functions: which
 * WEB_CONNECT_SRC values the relay takes into its CSP (and which it refuses, so that no setting can widen
 * the policy or end its directive), and which Sec-WebSocket-Protocol offers carry a token.
 */
import { expect } from "chai";
import { isSubprotocolToken, wsAuthSubprotocols } from "../../protocol/wire";
import { ConfigError, DEFAULT_WEB_CONNECT_SRC, parseConfig } from "../../relay/config";
import { webClientCsp } from "../../relay/http/web-client";
import { selectSubprotocol, subprotocolToken } from "../../relay/sessions";
import { relayEnv } from "../helpers/relay-process";

const env = (extra: Record<string, string>) =>
  relayEnv({
    rpcUrl: "http://127.0.0.1:8545",
    contractAddress: `0x${"12".repeat(20)}`,
    deployBlock: 0,
    relayerKey: `0x${"11".repeat(32)}`,
    dataDir: "/tmp/unused",
    port: 8443,
    env: extra,
  });

describe("web client settings and WebSocket subprotocol auth", () => {
  it("WEB_CLIENT_DIR unset serves no client; WEB_CONNECT_SRC defaults to local RPCs and any HTTPS", () => {
    const config = parseConfig(env({}));
    expect(config.webClient).to.deep.equal({ dir: null, connectSrc: DEFAULT_WEB_CONNECT_SRC });
    expect(parseConfig(env({ WEB_CLIENT_DIR: "data/web" })).webClient.dir).to.equal("data/web");
  });

  it("takes schemes and origins (ports, :*, IPv6, wildcard subdomains) into connect-src", () => {
    const given = "https://rpc.example.org http://127.0.0.1:* https://*.infura.io:443 wss://node.example.org/ http://[::1]:8545 https:";
    const { connectSrc } = parseConfig(env({ WEB_CONNECT_SRC: `  ${given} ` })).webClient;
    expect(connectSrc).to.deep.equal(given.split(" "));
    expect(webClientCsp(connectSrc)).to.include(`connect-src 'self' ${given};`);
  });

  it("refuses anything that would widen the policy or end its directive, naming the setting", () => {
    for (const bad of ["*", "'unsafe-inline'", "https: ; script-src *", "https://a.org,https://b.org", "ftp://files.example.org", "https://exa mple.org", "https://a.org:99999", "data:", "https://a.org/path?x", "javascript:"]) {
      expect(() => parseConfig(env({ WEB_CONNECT_SRC: bad })), bad)
        .to.throw(ConfigError)
        .with.property("setting", "WEB_CONNECT_SRC");
    }
  });

  it("reads the token from `eth-chat, bearer.<token>` only, and selects eth-chat alone", () => {
    const token = "eyJzdWIiOiJhbGljZSJ9.AbC-_d";
    expect(subprotocolToken(`eth-chat, bearer.${token}`)).to.equal(token);
    expect(subprotocolToken(`bearer.${token},eth-chat`)).to.equal(token);
    expect(subprotocolToken(`bearer.${token}`)).to.equal(undefined);
    expect(subprotocolToken("eth-chat")).to.equal(undefined);
    expect(subprotocolToken(`eth-chat, bearer.${token}, bearer.${token}`)).to.equal(undefined);
    expect(subprotocolToken("eth-chat, bearer.")).to.equal(undefined);
    expect(subprotocolToken("eth-chat, bearer.a/b")).to.equal(undefined);
    expect(subprotocolToken(undefined)).to.equal(undefined);
    expect(selectSubprotocol(new Set(["bearer.x", "eth-chat"]))).to.equal("eth-chat");
    expect(selectSubprotocol(new Set(["bearer.x"]))).to.equal(false);
  });

  it("gives a browser the two subprotocols, and refuses a token that is not an RFC 7230 token", () => {
    expect(wsAuthSubprotocols("abc.DEF-_")).to.deep.equal(["eth-chat", "bearer.abc.DEF-_"]);
    for (const bad of ["", "a b", "a/b", "a=b", "a,b", "é", "x".repeat(1025)]) {
      expect(isSubprotocolToken(bad), JSON.stringify(bad)).to.equal(false);
      expect(() => wsAuthSubprotocols(bad)).to.throw(/Authorization header/);
    }
  });
});

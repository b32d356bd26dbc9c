package dev.kappa.examples.streams;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.Reader;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * A Kafka Streams processor under the Kappa processor contract v1: per-key
 * count, sum and maximum of a numeric JSON field, the same view the reference
 * processor writes (so its {@code check} verifies this one too).
 *
 * <p>The topology has a repartition topic ({@code <group>-by-key-repartition})
 * and a state store with a changelog ({@code <group>-totals-changelog}): both
 * named after {@code application.id} = {@code KAPPA_CONSUMER_GROUP}, so the
 * operator counts the repartition topic in the catch-up gate and deletes both
 * when the version retires.
 *
 * <p>Arguments: {@code --logic sum|count|max} (default sum), {@code --field NAME}
 * (default amount), {@code --commit-interval-ms N} (default: Kafka Streams' own,
 * 30 s), {@code --health-port N} (default 8081): {@code /healthz}
 * fails once the client is in ERROR or stopped (a liveness probe restarts it),
 * {@code /readyz} answers 200 only while it is RUNNING.
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws Exception {
    String logic = arg(args, "--logic", "sum");
    if (!List.of("sum", "count", "max").contains(logic)) {
      throw new IllegalArgumentException("--logic must be sum, count or max, not " + logic);
    }
    Pattern field = Pattern.compile("\"" + Pattern.quote(arg(args, "--field", "amount")) + "\"\\s*:\\s*(-?\\d+)(?![.\\deE])");
    int healthPort = Integer.parseInt(arg(args, "--health-port", "8081"));

    String version = env("KAPPA_VIEW_VERSION");
    Properties config = config();
    String commitEvery = arg(args, "--commit-interval-ms", null);
    if (commitEvery != null) {
      config.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Integer.parseInt(commitEvery));
    }
    KafkaStreams streams = new KafkaStreams(topology(field, logic, version), config);
    serveHealth(streams, healthPort);

    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close(Duration.ofSeconds(20));
      stopped.countDown();
    }));
    streams.start();
    stopped.await();
  }

  /** The contract's client properties as they are, plus what only Kafka Streams needs. */
  static Properties config() throws IOException {
    Properties props = new Properties();
    try (Reader r = Files.newBufferedReader(Path.of(env("KAPPA_PROPERTIES")), StandardCharsets.UTF_8)) {
      props.load(r);
    }
    // Kafka Streams names its consumer group, and every internal topic, after application.id.
    props.remove(ConsumerConfig.GROUP_ID_CONFIG);
    props.remove(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG);
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, env("KAPPA_CONSUMER_GROUP"));
    props.put(StreamsConfig.STATE_DIR_CONFIG, env("KAPPA_STATE_DIR"));
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // Static membership: a restarted pod takes its tasks back without a rebalance.
    String instance = System.getenv("KAPPA_INSTANCE_ID");
    if (instance != null && !instance.isEmpty()) {
      props.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), instance);
    }
    // Everything else (at-least-once, commit.interval.ms 30 s unless asked) stays Kafka Streams' default.
    return props;
  }

  static Topology topology(Pattern field, String logic, String version) {
    List<String> inputs = Arrays.stream(env("KAPPA_INPUT_TOPICS").split(",")).map(String::trim).filter(s -> !s.isEmpty()).toList();
    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(inputs, Consumed.with(Serdes.String(), Serdes.String()))
        .flatMap((key, value) -> parse(key, value, field))
        .groupByKey(Grouped.with("by-key", Serdes.String(), Serdes.Long()))
        .aggregate(
            () -> "0,0,",
            (key, amount, agg) -> add(agg, amount),
            Materialized.<String, String, KeyValueStore<Bytes, byte[]>>as("totals")
                .withKeySerde(Serdes.String())
                .withValueSerde(Serdes.String()))
        .toStream()
        .mapValues(agg -> json(agg, logic, version))
        .to(env("KAPPA_OUTPUT_TOPIC"), Produced.with(Serdes.String(), Serdes.String()));
    return builder.build();
  }

  /**
   * The event's key (the record key, else its "key" field) and amount; none
   * for an event that is not a JSON object with an integer field. Re-keying
   * here makes the aggregation go through a repartition topic.
   */
  static List<KeyValue<String, Long>> parse(String key, String value, Pattern field) {
    if (value == null) {
      return List.of();
    }
    Matcher m = field.matcher(value);
    if (!value.trim().startsWith("{") || !m.find()) {
      return List.of();
    }
    if (key == null || key.isEmpty()) {
      Matcher k = Pattern.compile("\"key\"\\s*:\\s*\"([^\"]*)\"").matcher(value);
      if (!k.find()) {
        return List.of();
      }
      key = k.group(1);
    }
    return List.of(KeyValue.pair(key, Long.parseLong(m.group(1))));
  }

  /** The aggregate is "count,sum,max" (max empty before the first event). */
  static String add(String agg, long amount) {
    String[] p = agg.split(",", -1);
    long count = Long.parseLong(p[0]) + 1;
    long sum = Long.parseLong(p[1]) + amount;
    long max = p[2].isEmpty() ? amount : Math.max(Long.parseLong(p[2]), amount);
    return count + "," + sum + "," + max;
  }

  static String json(String agg, String logic, String version) {
    String[] p = agg.split(",", -1);
    StringBuilder out = new StringBuilder("{\"count\":").append(p[0]);
    if (logic.equals("sum")) {
      out.append(",\"sum\":").append(p[1]);
    }
    if (logic.equals("max") && !p[2].isEmpty()) {
      out.append(",\"max\":").append(p[2]);
    }
    return out.append(",\"logic\":\"").append(logic).append("\",\"version\":\"").append(version).append("\"}").toString();
  }

  static void serveHealth(KafkaStreams streams, int port) throws IOException {
    String host = System.getenv().getOrDefault("POD_IP", "0.0.0.0");
    HttpServer server = HttpServer.create(new InetSocketAddress(host.isEmpty() ? "0.0.0.0" : host, port), 0);
    server.createContext("/healthz", ex -> {
      KafkaStreams.State s = streams.state();
      boolean alive = s != KafkaStreams.State.ERROR && s != KafkaStreams.State.PENDING_ERROR && s != KafkaStreams.State.NOT_RUNNING;
      reply(ex, alive ? 200 : 503, s.name());
    });
    server.createContext("/readyz", ex -> {
      KafkaStreams.State s = streams.state();
      reply(ex, s == KafkaStreams.State.RUNNING ? 200 : 503, s.name());
    });
    server.setExecutor(null);
    server.start();
  }

  private static void reply(com.sun.net.httpserver.HttpExchange ex, int code, String body) throws IOException {
    byte[] bytes = (body + "\n").getBytes(StandardCharsets.UTF_8);
    ex.sendResponseHeaders(code, bytes.length);
    try (var out = ex.getResponseBody()) {
      out.write(bytes);
    }
  }

  private static String env(String name) {
    String v = System.getenv(name);
    if (v == null || v.isEmpty()) {
      throw new IllegalStateException(name + " is not set: run this under the Kappa processor contract (see docs/contract.md)");
    }
    return v;
  }

  private static String arg(String[] args, String name, String fallback) {
    for (int i = 0; i + 1 < args.length; i++) {
      if (args[i].equals(name)) {
        return args[i + 1];
      }
    }
    return fallback;
  }
}
